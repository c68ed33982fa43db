"""Resume: SIGKILL a training process mid-run, resume it, get the uninterrupted run's weights and metrics.

Also: a re-run on an interrupted run directory without ``--resume`` is refused
with a one-line hint, ``--overwrite`` is required to replace a finished run,
and a diverging run stops with a message naming the epoch and the loss.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _cli(*args, wait=True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "kdefect_cli.main", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _train_args(tmp_path, output, epochs=EPOCHS, lr=None):
    config = tmp_path / "tiny.yaml"
    config.write_text("num_samples: 24\nvalidate_every: 0\n")
    args = ["train", "--config", config, "--input-size", "64x128", "--epochs", epochs, "--batch-size", 2,
            "--seed", 11, "--no-figures", "-q", "--output", output]
    return args + (["--lr", lr] if lr is not None else [])


def _state(run_dir):
    path = Path(run_dir) / "checkpoint" / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _numbers(metrics):
    """metrics.json without its timing (the only value that may differ between identical runs)."""
    metrics = dict(metrics)
    metrics.pop("wall_time_seconds", None)
    return metrics


def _weights(path):
    import keras

    import kdefect.model  # noqa: F401  (registers SegDecNet for loading)

    return [v.numpy() for v in keras.saving.load_model(path).weights]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    done = _cli(*_train_args(tmp, tmp / "run"))
    assert done.returncode == 0, done.stderr
    return tmp / "run"


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _cli(*_train_args(tmp_path, run), wait=False)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            state = _state(run)
            if state and state["status"] == "training" and state["epoch"] >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = _state(run)
    assert 1 <= killed_at["epoch"] < EPOCHS and killed_at["status"] == "training"
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert not list((run / "checkpoint").glob(".*tmp*")), "no temporary checkpoint file may be left"

    # The same command again: refused with a hint to --resume, nothing touched.
    again = _cli(*_train_args(tmp_path, run))
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--resume" in again.stderr and "interrupted" in again.stderr
    assert "Traceback" not in again.stderr
    assert _state(run) == killed_at

    resumed = _cli("train", "--resume", run, "--no-figures", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert _state(run)["status"] == "done"
    assert not list((run / "checkpoint").glob("*.keras")), "a finished run keeps no checkpoint model"

    straight = json.loads((uninterrupted / "metrics.json").read_text())
    after = json.loads((run / "metrics.json").read_text())
    assert _numbers(after) == _numbers(straight)
    assert (run / "history.csv").read_text() == (uninterrupted / "history.csv").read_text()
    for a, b in zip(_weights(run / "model.keras"), _weights(uninterrupted / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)

    # A complete run: nothing to resume; a re-run needs --overwrite.
    done = _cli("train", "--resume", run)
    assert done.returncode == 2 and "already complete" in done.stderr and done.stderr.count("\n") == 1


def test_existing_run_needs_overwrite(tmp_path, uninterrupted):
    refused = _cli(*_train_args(tmp_path, uninterrupted, epochs=1))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    kept = _cli(*_train_args(tmp_path, other, epochs=1), "--overwrite")
    assert kept.returncode == 2 and "not a kdefect run directory" in kept.stderr
    assert (other / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("dataset: synthetic\n")
    (run / "stale.txt").write_text("old")
    done = _cli(*_train_args(tmp_path, run, epochs=1), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert not (run / "stale.txt").exists() and (run / "metrics.json").exists()


def test_resume_rejects_other_settings_and_non_runs(tmp_path):
    bad = _cli("train", "--resume", tmp_path / "nope")
    assert bad.returncode == 2 and "no such run directory" in bad.stderr and bad.stderr.count("\n") == 1
    mixed = _cli("train", "--resume", tmp_path, "--epochs", 3)
    assert mixed.returncode == 2 and "epochs" in mixed.stderr and mixed.stderr.count("\n") == 1


def test_divergence_stops_with_epoch_and_loss_and_keeps_checkpoint(tmp_path):
    run = tmp_path / "run"
    failed = _cli(*_train_args(tmp_path, run, epochs=3, lr=1e6))
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip()
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert line.startswith("Error: training diverged in epoch ")
    assert any(f"({name})" in line for name in ("seg_loss", "cls_loss", "loss", "weights"))
    epoch = int(line.split("epoch ")[1].split(":")[0])
    state = _state(run)
    if epoch == 1:
        assert state is None and "no checkpoint" in line
    else:
        assert state["epoch"] == epoch - 1 and (run / "checkpoint" / state["model"]).exists()
        assert f"epoch {epoch - 1}" in line
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
