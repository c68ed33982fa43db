"""``--seed`` makes CPU runs repeatable: two runs, identical metrics.json numbers, history and weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdefect.data.pipeline import training_dataset
from kdefect.data.samples import SampleSet

ROOT = Path(__file__).resolve().parents[1]


def _start(tmp_path, output, seed):
    config = tmp_path / "tiny.yaml"
    config.write_text("num_samples: 16\n")
    cmd = [sys.executable, "-m", "kdefect_cli.main", "train", "--config", str(config), "--input-size", "64x128",
           "--epochs", "2", "--batch-size", "2", "--seed", str(seed), "--no-figures", "-q",
           "--output", str(output)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("wall_time_seconds")  # a timing, the only number allowed to differ
    return metrics


@pytest.mark.slow
def test_two_seeded_runs_are_identical(tmp_path):
    # Both at once: they compete for the cores, so thread scheduling differs between them.
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [_start(tmp_path, run, seed=5) for run in runs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    a, b = (_metrics(run) for run in runs)
    assert a == b
    assert a["seed"] == 5 and a["n_images"] == 8
    assert (runs[0] / "history.csv").read_text() == (runs[1] / "history.csv").read_text()
    assert (runs[0] / "results.csv").read_text() == (runs[1] / "results.csv").read_text()
    import keras

    from kdefect.model import SegDecNet  # noqa: F401  (registers the class for loading)

    weights = [[v.numpy() for v in keras.saving.load_model(run / "model.keras").weights] for run in runs]
    for x, y in zip(*weights, strict=True):
        np.testing.assert_array_equal(x, y)


def test_parallel_map_keeps_the_schedule_order():
    """The pipeline's parallel ``map`` (AUTOTUNE) must not reorder: batch k holds schedule[k]."""
    n = 40
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 128, 64, 1)).copy()
    samples = SampleSet.from_arrays(images, [np.ones((128, 64), np.uint8)] * 4 + [None] * (n - 4))
    schedule = np.random.default_rng(0).permutation(np.tile(np.arange(n), 3)).reshape(3, n)
    seen = [
        int(round(float(x[0, 0, 0]) * 255))
        for batch, _ in training_dataset(samples, schedule, batch_size=4)
        for x in batch.numpy()
    ]
    assert seen == schedule.reshape(-1).tolist()
