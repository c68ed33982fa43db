"""Interleaved A/B timing of SegDecNet training steps: float32 vs mixed_bfloat16, XLA off vs on.

On a shared machine the load changes from second to second, so timing one
configuration after another compares loads as much as configurations. This
script builds every variant in one process and runs their steps in rotating
order (round k: A B C D, round k+1: B C D A, ...); each round yields the ratio
of every variant to the first one under nearly the same load, and the median
of those ratios is reported next to the median step times.

Usage::

    python benchmarks/precision_ab.py --input-size 704x256 --rounds 7
    python benchmarks/precision_ab.py --input-size 704x256 --variants float32,mixed_bfloat16 --forward

Prints one JSON document (``--json PATH`` also writes it).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _variant(spec):
    """``float32`` / ``mixed_bfloat16`` with an optional ``+xla`` suffix -> (policy, jit)."""
    policy, _, flag = spec.partition("+")
    return policy, flag == "xla"


def main(argv=None):
    """Run the interleaved comparison; return the result dict.

    Example (tiny, a few seconds):
    >>> r = main(["--input-size", "128x64", "--rounds", "2", "--variants", "float32,mixed_bfloat16"])
    >>> sorted(r["variants"])
    ['float32', 'mixed_bfloat16']
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", default="704x256", help="HxW")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--variants", default="float32,mixed_bfloat16,float32+xla,mixed_bfloat16+xla")
    parser.add_argument("--forward", action="store_true", help="time inference (forward) instead of training")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from kdefect.model import SegDecNet

    height, width = (int(v) for v in args.input_size.lower().split("x"))
    b = args.batch_size
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((b, height, width, 1), dtype=np.float32))
    target = np.zeros((b, height // 8, width // 8, 1), np.float32)
    target[:, 2:5, 2:5] = 1.0
    y = {"seg_target": tf.constant(target), "seg_weight": tf.ones_like(target),
         "cls_target": tf.ones((b, 1)), "is_segmented": tf.ones((b, 1))}
    saved = keras.config.dtype_policy()
    runners = {}
    for spec in args.variants.split(","):
        policy, jit = _variant(spec)
        keras.config.set_dtype_policy(policy)
        model = SegDecNet(input_shape=(height, width, 1))
        model.compile(keras.optimizers.SGD(0.01), jit_compile=jit)
        model.seg_loss_weight.assign(0.5)
        if args.forward:
            fn = tf.function(lambda images, m=model: m(images, training=False)[0], jit_compile=jit)
            runners[spec] = lambda fn=fn: fn(x).numpy()
        else:
            runners[spec] = lambda m=model: m.train_on_batch(x, y)
    keras.config.set_dtype_policy(saved)

    names = list(runners)
    times = {n: [] for n in names}
    for n in names:  # warm-up: tracing/compilation and first allocations
        runners[n]()
        runners[n]()
    ratios = {n: [] for n in names}
    load = [os.getloadavg()[0]]
    for k in range(args.rounds):
        order = names[k % len(names):] + names[:k % len(names)]
        this = {}
        for n in order:
            start = time.perf_counter()
            runners[n]()
            this[n] = time.perf_counter() - start
            times[n].append(this[n])
        for n in names:
            ratios[n].append(this[n] / this[names[0]])
        load.append(os.getloadavg()[0])
    result = {
        "mode": "forward" if args.forward else "train",
        "input_size": [height, width],
        "batch_size": b,
        "rounds": args.rounds,
        "load_average_1min": [min(load), max(load)],
        "baseline": names[0],
        "variants": {
            n: {
                "median_seconds_per_image": statistics.median(times[n]) / b,
                "median_ratio_to_baseline": statistics.median(ratios[n]),
                "seconds": [round(t, 4) for t in times[n]],
            }
            for n in names
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
