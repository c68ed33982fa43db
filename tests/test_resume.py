"""Resume: SIGKILL a training process mid-run, resume it, get the uninterrupted run's weights and metrics.

Also: a re-run on an interrupted run directory without ``--resume`` is refused
with a one-line hint, ``--overwrite`` is required to replace a finished run,
and a diverging run stops with a message naming the epoch and the loss.
The killed run is a real process; the other commands run in-process through
Click's ``CliRunner`` (no TensorFlow start-up per command, same code path).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from kdefect_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _cli(*args):
    """``kdefect ARGS`` in-process; ``returncode``/``stdout``/``stderr`` as from a subprocess."""
    result = CliRunner().invoke(main, [str(a) for a in args], prog_name="kdefect")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught exception would be a traceback for the user
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def _spawn(*args):
    """``kdefect ARGS`` as a separate process (to be killed)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "kdefect_cli.main", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _train_args(tmp_path, output, epochs=EPOCHS):
    config = tmp_path / "tiny.yaml"
    config.write_text("num_samples: 16\nvalidate_every: 0\n")
    args = ["train", "--config", config, "--input-size", "64x128", "--epochs", epochs, "--batch-size", 2,
            "--seed", 11, "--no-figures", "-q", "--output", output]
    return args


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


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _spawn(*_train_args(tmp_path, run))
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
    assert not list((run / "checkpoint").glob(".*")), "temporary files of the killed process are removed"

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


@pytest.mark.parametrize("settings, epoch, loss", [
    (["--lr", 1e6], 1, "seg_loss"),  # absurd learning rate: the first epoch already diverges
    (["--delta", 1e30], 2, "cls_loss"),  # epoch 1 trains segmentation only (w_cls = 0); epoch 2 explodes
])
def test_divergence_names_epoch_and_loss_and_keeps_the_last_good_checkpoint(tmp_path, settings, epoch, loss):
    run = tmp_path / "run"
    failed = _cli(*_train_args(tmp_path, run, epochs=3), *settings)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    line = failed.stderr.strip()
    assert line.startswith(f"Error: training diverged in epoch {epoch}: ") and f"({loss}) became nan" in line
    state = _state(run)
    if epoch == 1:
        assert state is None and "no checkpoint was written" in line
    else:
        assert state["epoch"] == epoch - 1 and state["status"] == "training"
        assert (run / "checkpoint" / state["model"]).exists()
        assert f"last good checkpoint (epoch {epoch - 1}) is kept in {run / 'checkpoint'}" in line
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()


def _strip_times(value):
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k != "wall_time_seconds"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


@pytest.mark.slow
def test_multi_fold_resume_keeps_finished_folds_and_continues_the_interrupted_one(tmp_path, monkeypatch):
    """Two folds (synthetic data standing in for KSDD's); interrupted in fold 1 after its first epoch.

    The synthetic set ignores the fold, so both folds train the same data with
    the same seed: the resumed fold 1 must end exactly like the uninterrupted fold 0.
    """
    import kdefect.training as training
    from kdefect.callbacks import NonFiniteGuard
    from kdefect.config import TrainConfig

    monkeypatch.setitem(training.MULTI_FOLD, "synthetic", (0, 1))
    config = TrainConfig(num_samples=16, input_size=(64, 128), epochs=2, batch_size=2, seed=3, fold=None)
    quiet = dict(verbose=0, figures=False, log=lambda *a: None)

    guards = []

    class Interrupt(NonFiniteGuard):
        def on_epoch_begin(self, epoch, logs=None):
            if len(guards) == 2 and epoch == 1:  # fold 1, epoch 0 checkpointed
                raise KeyboardInterrupt
            super().on_epoch_begin(epoch, logs)

    monkeypatch.setattr(training, "NonFiniteGuard", lambda: guards.append(1) or Interrupt())
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, output=run, **quiet)
    assert _state(run / "fold_0")["status"] == "done" and _state(run / "fold_1")["epoch"] == 1
    assert not (run / "fold_1" / "metrics.json").exists() and training.run_status(run) == "interrupted"
    fold0 = (run / "fold_0" / "metrics.json").read_text()

    monkeypatch.setattr(training, "NonFiniteGuard", NonFiniteGuard)
    messages = []
    resumed = training.resume_run(run, verbose=0, figures=False, log=messages.append)
    assert "fold 0: finished earlier, keeping its results" in messages
    assert (run / "fold_0" / "metrics.json").read_text() == fold0  # not retrained
    assert training.run_status(run) == "complete"
    folds = [_strip_times(json.loads((run / f"fold_{k}" / "metrics.json").read_text())) for k in (0, 1)]
    for fold in folds:
        fold.pop("config")
    assert folds[0] == folds[1]
    assert resumed["ap"] == folds[0]["ap"] and resumed["fp"] == 2 * folds[0]["fp"]
    assert (run / "fold_0" / "history.csv").read_text() == (run / "fold_1" / "history.csv").read_text()
    weights = [_weights(run / f"fold_{k}" / "model.keras") for k in (0, 1)]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch):
    import kdefect.training as training
    from kdefect.callbacks import NonFiniteGuard

    class CtrlC(NonFiniteGuard):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt
            super().on_epoch_begin(epoch, logs)

    monkeypatch.setattr(training, "NonFiniteGuard", CtrlC)
    run = tmp_path / "run"
    stopped = _cli(*_train_args(tmp_path, run, epochs=2))
    assert stopped.returncode == 130
    assert stopped.stderr == f"Error: interrupted; continue with `kdefect train --resume {run}`\n"
    assert _state(run)["epoch"] == 1
