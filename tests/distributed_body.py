"""Bodies of the distribution tests, each run in a fresh Python process by ``test_distribute.py``.

TensorFlow's device set-up (two logical CPUs) and the multi-worker strategy
(collective ops) must be configured before TensorFlow initialises, so each
scenario runs in its own process and reports a JSON line starting with
``RESULT``. Run by hand: ``python tests/distributed_body.py mirrored OUT_DIR``.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Small enough to be fast, large enough for a meaningful step: 2 epochs of one global batch of 4
# (2 positives + 2 frequency-sampled negatives of 6), so λ changes between the steps (1.0, then 0.5).
MIRRORED = dict(num_samples=16, input_size=(128, 64), epochs=2, batch_size=4, lr=0.01, seed=7)
# Per worker one image per step: global batch 2, 2 epochs of 1 step (1 positive + 1 of 3 negatives).
MULTI_WORKER = dict(num_samples=8, input_size=(128, 64), epochs=2, batch_size=2, lr=0.01, seed=7)


def _relative_difference(weights, reference, initial):
    """max over variables of |w - w_ref| / |w_ref - w_init| (the difference relative to the update)."""
    import numpy as np

    worst = 0.0
    for w, ref, init in zip(weights, reference, initial):
        update = np.linalg.norm(ref - init)
        if update > 0:
            worst = max(worst, float(np.linalg.norm(w - ref) / update))
    return worst


def _initial_weights(config, input_shape):
    """The weights a run of ``config`` starts from (``fit`` seeds before building the model)."""
    from kdefect.training import build_model, configure_determinism

    configure_determinism(config.seed)
    return [v.numpy() for v in build_model(config, input_shape).trainable_weights]


def mirrored(out):
    """One device vs ``MirroredStrategy`` on two logical CPUs, both through ``training.fit``."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np

    from kdefect.config import TrainConfig
    from kdefect.data.datasets import load_splits
    from kdefect.data.pipeline import evaluation_dataset
    from kdefect.distribute import get_strategy
    from kdefect.evaluation import predict_scores
    from kdefect.training import fit

    result = {
        "replicas": {name: get_strategy(name).num_replicas_in_sync for name in ("none", "auto", "mirrored")},
    }
    config = TrainConfig(**MIRRORED)
    splits = load_splits(config)
    runs = {}
    five = splits.test.subset(np.arange(5))  # batches of 4 and 1: one replica gets no image of the last
    for name in ("none", "mirrored"):
        start = time.time()
        (Path(out) / name).mkdir(parents=True)
        model, info = fit(config.replace(strategy=name), splits, Path(out) / name, verbose=0)
        lam = model.seg_loss_weight.value
        runs[name] = {
            "weights": [v.numpy() for v in model.trainable_weights],
            "usage": info["negative_usage"],
            "history": (Path(out) / name / "history.csv").read_text(),
            "replicas": model.distribute_strategy.num_replicas_in_sync,
            "lambda_per_replica": [float(v.numpy()) for v in getattr(lam, "values", [lam])],
            "scores": predict_scores(model, evaluation_dataset(five, 4))[0].tolist(),
            "seconds": round(time.time() - start, 1),
        }
    initial = _initial_weights(config, splits.train.input_shape)
    one, two = runs["none"], runs["mirrored"]
    result.update(
        relative_difference=_relative_difference(two["weights"], one["weights"], initial),
        max_abs_difference=max(float(np.abs(a - b).max()) for a, b in zip(one["weights"], two["weights"])),
        smallest_update=min(float(np.linalg.norm(w - i)) for w, i in zip(one["weights"], initial)),
        **{f"{key}_{name}": run[key] for name, run in runs.items()
           for key in ("usage", "history", "replicas", "lambda_per_replica", "scores", "seconds")},
    )
    print("RESULT " + json.dumps(result), flush=True)


def worker(out):
    """One worker of a two-process ``MultiWorkerMirroredStrategy`` run (``TF_CONFIG`` is set).

    Runs ``kdefect.training.train`` end to end; the chief then also trains the
    same configuration on one device for comparison. Saves the final weights
    to ``<out>/weights-<task>.npz``.
    """
    from kdefect.distribute import get_strategy, is_chief

    strategy = get_strategy("multi-worker")  # before TensorFlow does anything else

    import numpy as np

    from kdefect.config import TrainConfig
    from kdefect.training import train

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    config = TrainConfig(**MULTI_WORKER, strategy="multi-worker")
    start = time.time()
    metrics = train(config, output=Path(out) / "run", verbose=0, figures=False, log=lambda *a: None)
    result = {"task": task, "chief": bool(is_chief(strategy)), "run_dir": metrics["run_dir"],
              "replicas": strategy.num_replicas_in_sync, "ap": metrics["ap"],
              "seconds": round(time.time() - start, 1)}
    import keras

    model = keras.saving.load_model(Path(metrics["run_dir"]) / "model.keras")
    weights = [v.numpy() for v in model.trainable_weights]
    np.savez(Path(out) / f"weights-{task}.npz", *weights)
    if result["chief"]:
        from kdefect.data.datasets import load_splits
        from kdefect.training import fit

        single = config.replace(strategy="none")
        splits = load_splits(single)
        (Path(out) / "single").mkdir()
        reference, _ = fit(single, splits, Path(out) / "single", verbose=0, strategy=get_strategy("none"))
        reference = [v.numpy() for v in reference.trainable_weights]
        initial = _initial_weights(single, splits.train.input_shape)
        result.update(
            relative_difference_to_single=_relative_difference(weights, reference, initial),
            max_abs_difference_to_single=max(float(np.abs(a - b).max()) for a, b in zip(weights, reference)),
            max_abs_update_single=max(float(np.abs(a - b).max()) for a, b in zip(reference, initial)),
        )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    {"mirrored": mirrored, "worker": worker}[sys.argv[1]](sys.argv[2])
