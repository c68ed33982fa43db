"""Benchmark: how fast the tf.data pipeline delivers KSDD batches, vs how fast SegDecNet consumes them.

Each mode runs in its own process so its peak memory is its own:

- ``ram``: images decoded once into uint8 RAM, batches by ``tf.gather``;
- ``stream``: images read, decoded and resized from disk in the ``map``;
- ``model``: SegDecNet training steps on in-RAM batches (the consumer).

Usage::

    python benchmarks/pipeline_bench.py --data-dir PATH_TO_KSDD_OR_ZIP [--scale 0.5] [--batch 1]

Without ``--data-dir`` it uses ``$KDEFECT_DATA_DIR``, else ``../shared/datasets/KolektorSDD.zip``
beside the repository, else the download cache. Prints one JSON line per mode and a summary.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "KolektorSDD.zip"


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load(args, in_memory):
    import tensorflow  # noqa: F401  (so that the baseline includes the runtime)

    args.baseline_rss_mb = round(_peak_mb(), 0)
    from kdefect.config import load_config
    from kdefect.data.datasets import load_splits
    from kdefect.data.download import dataset_root

    root = dataset_root("ksdd", args.data_dir)
    start = time.perf_counter()
    config = load_config("ksdd", data_dir=str(root), scale=args.scale, fold=0, in_memory=in_memory)
    train = load_splits(config).train
    return train, time.perf_counter() - start


def run_pipeline(args, in_memory):
    """Images/s and batches/s of ``training_dataset`` over ``args.epochs`` epochs of fold 0."""
    from kdefect.data.pipeline import training_dataset
    from kdefect.data.sampling import epoch_schedule

    train, load_s = _load(args, in_memory)
    schedule, _ = epoch_schedule(train.is_positive, args.epochs, args.batch, seed=0)
    dataset = training_dataset(train, schedule, args.batch)
    iterator = iter(dataset)
    next(iterator)  # warm-up: graph tracing and the first prefetch
    start, batches = time.perf_counter(), 0
    for _ in iterator:
        batches += 1
    seconds = time.perf_counter() - start
    return {
        "mode": "ram" if in_memory else "stream",
        "input_shape": list(train.input_shape),
        "train_images": len(train),
        "load_seconds": round(load_s, 2),
        "batch": args.batch,
        "batches": batches,
        "batches_per_s": round(batches / seconds, 1),
        "images_per_s": round(batches * args.batch / seconds, 1),
        "baseline_rss_mb": args.baseline_rss_mb,
        "peak_rss_mb": round(_peak_mb(), 0),
    }


def run_model(args):
    """Seconds per image of SegDecNet training steps (SGD) fed by the in-RAM pipeline."""
    import keras

    from kdefect.data.pipeline import training_dataset
    from kdefect.data.sampling import epoch_schedule
    from kdefect.model import SegDecNet

    train, _ = _load(args, True)
    schedule, _ = epoch_schedule(train.is_positive, 1, args.batch, seed=0)
    steps = args.model_steps + 1
    dataset = training_dataset(train, schedule[:, : steps * args.batch], args.batch)
    model = SegDecNet(input_shape=train.input_shape)
    model.compile(keras.optimizers.SGD(0.1), delta=0.01)
    batches = list(dataset)
    model.train_on_batch(*batches[0])  # warm-up: tracing
    start = time.perf_counter()
    for x, y in batches[1:]:
        model.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / (len(batches) - 1)
    return {
        "mode": "model",
        "input_shape": list(train.input_shape),
        "batch": args.batch,
        "steps": len(batches) - 1,
        "seconds_per_step": round(seconds, 3),
        "images_per_s": round(args.batch / seconds, 2),
        "peak_rss_mb": round(_peak_mb(), 0),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("KDEFECT_DATA_DIR")
                        or (str(SHARED_ZIP) if SHARED_ZIP.is_file() else None))
    parser.add_argument("--scale", type=float, default=0.5, help="of 1408x512; 0.5 -> 704x256")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of fold 0 the pipeline delivers")
    parser.add_argument("--model-steps", type=int, default=5, help="timed training steps (0: skip)")
    parser.add_argument("--mode", choices=("ram", "stream", "model"), help="run one mode in this process")
    args = parser.parse_args(argv)
    if args.mode:
        result = {"ram": lambda: run_pipeline(args, True), "stream": lambda: run_pipeline(args, False),
                  "model": lambda: run_model(args)}[args.mode]()
        print(json.dumps(result), flush=True)
        return result
    results = {}
    modes = ["ram", "stream"] + (["model"] if args.model_steps > 0 else [])
    for mode in modes:
        command = [sys.executable, __file__, "--mode", mode, "--scale", str(args.scale), "--batch",
                   str(args.batch), "--epochs", str(args.epochs), "--model-steps", str(args.model_steps)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(results[mode]), flush=True)
    if "model" in results:
        for mode in ("ram", "stream"):
            ratio = results[mode]["images_per_s"] / results["model"]["images_per_s"]
            print(f"{mode}: pipeline delivers {ratio:.0f}x faster than the model consumes")
    return results


if __name__ == "__main__":
    main()
