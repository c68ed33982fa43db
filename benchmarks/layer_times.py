"""Where a SegDecNet training step spends its time: each Conv2D alone (forward + both gradients) vs the whole step.

Each conv layer of the model is timed on its own, with its real input shape
and dtype, forward plus the gradients a training step needs (weights, and
input except for the first conv), and compared with a full ``train_on_batch``
step measured in the same rounds. The remainder is everything that is not a
convolution (FeatureNorm, ReLU, pooling, casts, losses, the SGD update).

Usage::

    python benchmarks/layer_times.py --input-size 704x256 --precision mixed_bfloat16 --rounds 5
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    """Print and return per-layer seconds, their sum and the full step.

    Example:
    >>> r = main(["--input-size", "128x64", "--rounds", "1"])
    >>> r["step_seconds"] > 0 and len(r["layers"]) == 13
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", default="704x256")
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from kdefect.config import TrainConfig
    from kdefect.training import build_model

    tf.get_logger().setLevel("ERROR")  # one tf.function per layer is intended, not a retracing problem
    height, width = (int(v) for v in args.input_size.lower().split("x"))
    model = build_model(TrainConfig(precision=args.precision), (height, width, 1))
    model.seg_loss_weight.assign(0.5)
    x = np.random.default_rng(0).random((1, height, width, 1), dtype=np.float32)
    h8, w8 = height // 8, width // 8
    y = {"seg_target": np.zeros((1, h8, w8, 1), np.float32), "seg_weight": np.ones((1, h8, w8, 1), np.float32),
         "cls_target": np.ones((1, 1), np.float32), "is_segmented": np.ones((1, 1), np.float32)}

    runners = {"step": lambda: model.train_on_batch(x, y)}
    first = True
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        dtype = layer.compute_dtype
        inp = tf.cast(tf.random.stateless_uniform((1,) + tuple(layer.input.shape[1:]), (1, 2)), dtype)
        kernel = tf.cast(layer.kernel, dtype)

        def run(inp=inp, kernel=kernel, need_input_grad=not first):
            with tf.GradientTape() as tape:
                tape.watch(kernel)
                if need_input_grad:
                    tape.watch(inp)
                out = tf.nn.conv2d(inp, kernel, 1, "SAME")
                loss = tf.reduce_sum(tf.cast(out, tf.float32))
            grads = tape.gradient(loss, [kernel, inp] if need_input_grad else [kernel])
            return sum(tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads)

        fn = tf.function(run)
        runners[layer.name] = lambda fn=fn: fn().numpy()
        first = False
    names = list(runners)
    for name in names:
        runners[name]()
    times = {n: [] for n in names}
    for k in range(args.rounds):
        for n in names[k % len(names):] + names[:k % len(names)]:
            start = time.perf_counter()
            runners[n]()
            times[n].append(time.perf_counter() - start)
    med = {n: statistics.median(t) for n, t in times.items()}
    convs = {n: v for n, v in med.items() if n != "step"}
    result = {
        "input_size": [height, width], "precision": args.precision, "rounds": args.rounds,
        "load_average_1min": os.getloadavg()[0],
        "step_seconds": med["step"], "conv_seconds": sum(convs.values()),
        "other_seconds": med["step"] - sum(convs.values()), "layers": convs,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
