"""The ``kdefect`` command line, through Click's ``CliRunner`` and as the installed executable.

Covers help and version, shell completion, one-line user errors (exit code 2),
``train`` and ``evaluate`` on the built-in synthetic surfaces, and a round
trip train -> export (SavedModel and TFLite float32/float16/int8, parity
checked) -> predict on a folder with every model format, on a folder of
generated parts. Sizes are tiny (64x128 inputs, 24 images, a few epochs).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import kdefect
import kdefect.export
from kdefect.config import DATASETS
from kdefect_cli.main import main

from conftest import SHARED

SIZE = "64x128"  # H x W of the tiny test model
TINY_CONFIG = {"num_samples": 24, "epochs": 3, "batch_size": 2, "dilate": 3}
CORE_COMMANDS = ("train", "evaluate", "predict", "export")
FORMAT_TOLERANCE = {"saved_model": 1e-4, "tflite-float32": 1e-4, "tflite-float16": 1e-2, "tflite-int8": 0.05}


def run(*args, env=None):
    """Invoke ``kdefect ARGS...`` in-process; stdout and stderr stay separate (Click >= 8.2)."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="kdefect", env=env)


def assert_user_error(result, fragment=""):
    """Exit code 2, exactly one ``Error: ...`` line on stderr, no traceback anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def complete(words, cword):
    """Bash completion candidates for ``COMP_WORDS`` / ``COMP_CWORD``."""
    env = {"_KDEFECT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = run(env=env)
    assert result.exit_code == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


# --------------------------------------------------------------- help, version
def test_group_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: kdefect [OPTIONS] COMMAND")
    for name in main.commands:
        assert f"  {name} " in result.stdout
    assert "--version" in result.stdout
    assert run("-h").stdout == result.stdout


@pytest.mark.parametrize("name", sorted(main.commands))
def test_subcommand_help_documents_every_option(name):
    command = main.commands[name]
    result = run(name, "--help")
    assert result.exit_code == 0 and result.stderr == ""
    text = result.stdout
    assert text.startswith(f"Usage: kdefect {name} [OPTIONS]")
    ctx = click.Context(command, info_name=name, parent=click.Context(main, info_name="kdefect"))
    usage = " ".join(command.collect_usage_pieces(ctx))
    squeeze = "".join  # help wraps lines (even inside words), so compare without whitespace
    assert squeeze(f"Usage: kdefect {name} {usage}".split()) == squeeze(text.split("\n\n", 1)[0].split())
    if name in CORE_COMMANDS:
        assert "Example" in text  # shows how it is called
    for param in command.params:
        if isinstance(param, click.Argument):
            continue  # named in the usage line (checked above)
        assert param.help, f"{name} {param.opts} has no help text"
        for opt in param.opts + param.secondary_opts:
            assert opt in text, f"{name} --help does not mention {opt}"


def test_version_matches_the_package():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"kdefect, version {kdefect.__version__}"


# ------------------------------------------------------------------ completion
def test_completion_of_subcommands_and_choices():
    assert set(CORE_COMMANDS) <= set(complete("kdefect ", 1))
    assert complete("kdefect pr", 1) == ["predict"]
    assert complete("kdefect train --dataset ", 3) == list(DATASETS)
    assert complete("kdefect train --dataset ks", 3) == ["ksdd", "ksdd2"]
    assert "mixed_bfloat16" in complete("kdefect train --precision ", 3)
    assert complete("kdefect export m.keras --quantize ", 4) == ["float16", "int8"]
    options = complete("kdefect train --no-", 2)
    assert {"--no-dyn-balance", "--no-grad-adjust", "--no-freq-sampling", "--no-weighted-seg"} <= set(options)


def test_completion_script_for_bash():
    result = run(env={"_KDEFECT_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_KDEFECT_COMPLETE=bash_complete" in result.stdout and "complete " in result.stdout


# ----------------------------------------------------------------- user errors
def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "bad.yaml").write_text("epochs: 1\nno_such_key: 3\n")
    missing = tmp_path / "missing"
    cases = [
        (["train", "--input-size", "abc"], "'abc' is not HxW"),
        (["train", "--input-size", "65x128"], "divisible by 8"),
        (["train", "--input-size", "64"], "is not HxW"),
        (["train", "--dataset", "nope"], "'nope' is not one of"),
        (["train", "--fold", "x"], "not a fold number"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--config", missing / "c.yaml"], "c.yaml"),
        (["train", "--config", tmp_path / "bad.yaml"], "unknown key 'no_such_key'"),
        (["train", "--dataset", "folder", "--data-dir", missing], f"data directory {missing} does not exist"),
        (["train", "--dataset", "ksdd", "--data-dir", missing], f"{missing} does not exist"),
        (["predict", missing / "model.keras", tmp_path / "images"], f"model {missing / 'model.keras'} does not exist"),
        (["predict", tmp_path / "notes.txt", tmp_path / "images"], "is not a .keras, SavedModel or .tflite model"),
        (["predict", tmp_path / "notes.txt", missing], f"image {missing} does not exist"),
        (["predict", tmp_path / "notes.txt"], "Missing argument 'IMAGES...'"),
        (["export", missing / "model.keras"], f"model {missing / 'model.keras'} does not exist"),
        (["export", tmp_path / "notes.txt"], "is not a .keras model file"),
        (["export", tmp_path / "notes.txt", "--quantize", "int4"], "'int4' is not one of"),
        (["evaluate", missing], f"{missing} does not exist"),
        (["evaluate", tmp_path / "notes.txt"], "is not a .keras model file"),
        (["evaluate", tmp_path], "no config.yaml found"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["train", "--no-such-option"], "No such option '--no-such-option'"),
    ]
    for args, fragment in cases:
        result = run(*args)
        assert_user_error(result, fragment)
    assert not missing.exists()  # failed commands create nothing


def test_explicit_dataset_wins_over_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "folder", "data_dir": str(tmp_path / "none"), **TINY_CONFIG}))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("an unrelated folder")
    result = run("train", "--config", config, "--dataset", "synthetic", "--input-size", SIZE, "--output", taken)
    assert_user_error(result, str(taken))  # fails only at the (non-run) output folder
    assert "dataset: synthetic" in result.stdout and "num_samples: 24" in result.stdout
    assert (taken / "keep.txt").exists()


def test_ksdd_positives_10_resolves_the_paper_protocol(tmp_path):
    """``kdefect train --dataset ksdd --positives 10``: 3 joined folds, 90 epochs (no training here)."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("stops the command before training")
    env = {"KDEFECT_DATA_DIR": str(SHARED / "datasets" / "KolektorSDD.zip")}
    result = run("train", "--dataset", "ksdd", "--positives", "10", "--scale", "0.125", "--output", taken, env=env)
    assert_user_error(result, str(taken))
    printed = yaml.safe_load(result.stdout.split("Effective configuration:\n", 1)[1])
    assert printed["dataset"] == "ksdd" and printed["positives"] == 10
    assert printed["fold"] is None and printed["epochs"] == 90 and printed["lr"] == 0.5


# ------------------------------------------------------- train, evaluate, export, predict
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny synthetic training run through the CLI: ``(run directory, CliRunner result)``."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run_dir = root / "run"
    result = run("train", "--config", config, "--input-size", SIZE, "--epochs", 1, "--batch-size", 4,
                 "--output", run_dir, "--no-figures")
    assert result.exit_code == 0, (result.stdout[-2000:], result.stderr[-2000:], result.exception)
    return run_dir, result


def test_train_writes_the_run_and_prints_config_and_metrics(trained):
    run_dir, result = trained
    for name in ("model.keras", "metrics.json", "results.csv", "config.yaml", "report.html", "history.csv",
                 "scores.png"):
        assert (run_dir / name).is_file(), name
    assert "![scores.png](scores.png)" in (run_dir / "report.md").read_text()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    # explicit options win over --config, which wins over configs/synthetic.yaml
    assert saved["epochs"] == 1 and saved["batch_size"] == 4 and saved["input_size"] == [64, 128]
    assert saved["num_samples"] == 24 and saved["dilate"] == 3 and saved["dataset"] == "synthetic"
    assert saved["lr"] == 0.05  # untouched default of configs/synthetic.yaml
    # the printed effective configuration is the saved one
    printed = result.stdout.split("Effective configuration:\n", 1)[1]
    assert yaml.safe_dump(saved, sort_keys=False).rstrip() in printed
    assert "1/1" in result.stdout  # Keras progress bar (one step: 12 training images / 4 per batch)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"Test: AP {100 * metrics['ap']:.2f}%" in result.stdout
    assert f"{metrics['n_images']} images" in result.stdout and f"Run directory: {run_dir}" in result.stdout
    assert metrics["n_images"] == 12
    assert "Traceback" not in result.stderr


def test_evaluate_rewrites_the_reports(trained):
    run_dir, _ = trained
    before = json.loads((run_dir / "metrics.json").read_text())
    for name in ("metrics.json", "results.csv", "report.md"):
        (run_dir / name).unlink()
    result = run("evaluate", run_dir, "--no-figures")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert f"evaluating {run_dir / 'model.keras'} on 12 test images" in result.stdout
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["ap"] == pytest.approx(before["ap"]) and after["threshold"] == pytest.approx(before["threshold"])
    assert f"Test: AP {100 * after['ap']:.2f}%" in result.stdout
    with open(run_dir / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 12
    assert (run_dir / "report.md").is_file()


def test_export_parity_failure_is_one_line_with_exit_code_1(trained, monkeypatch):
    """A faulty export (here: an impossible tolerance) fails the command; parity.json says why."""
    monkeypatch.setitem(kdefect.export.SCORE_TOLERANCES, "saved_model", -1.0)
    run_dir, _ = trained
    out = run_dir / "export-strict"
    result = run("export", run_dir / "model.keras", "--output", out)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: export parity check failed:"), result.stderr
    assert "Traceback" not in result.stderr
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is False and parity["results"][0]["variant"] == "saved_model"


# ------------------------------------------- round trip: train -> export (all formats) -> predict
def write_parts(folder, count, seed, sizes=((64, 128),)):
    """Synthetic parts as PNG files: noisy gray surfaces, every other one with a bright defect.

    Defects are big and contrasted so that a few epochs train a model that
    separates the classes clearly; only then is the int8 criterion (AP drop <=
    1 point) meaningful on a dozen images (an untrained model's scores differ
    by less than int8's score resolution, 1/256). Returns ``{file name: defective}``.
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    truth = {}
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        image = np.clip(rng.normal(100, 12, (height, width)), 0, 255)
        defective = i % 2 == 1
        name = f"part{i:02d}.png"
        if defective:
            mask = np.zeros((height, width), np.uint8)
            y, x = rng.integers(4, height - height // 4 - 4), rng.integers(4, width - width * 3 // 16 - 4)
            image[y:y + height // 4, x:x + width * 3 // 16] = 240
            mask[y:y + height // 4, x:x + width * 3 // 16] = 255
            Image.fromarray(mask).save(folder / "masks" / name)
        Image.fromarray(image.astype(np.uint8)).save(folder / "images" / name)
        truth[name] = defective
    return truth


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Train on a folder of synthetic parts, then export every format: ``(run dir, export dir, result)``."""
    root = tmp_path_factory.mktemp("round_trip")
    write_parts(root / "data", 24, seed=0)
    config = root / "parts.yaml"
    config.write_text(yaml.safe_dump({"dataset": "folder", "data_dir": str(root / "data"), "input_size": [64, 128],
                                      "test_fraction": 0.5, "epochs": 3, "batch_size": 2}))
    run_dir = root / "run"
    trained = run("train", "--config", config, "--output", run_dir, "--no-figures", "--quiet")
    assert trained.exit_code == 0, (trained.stdout[-2000:], trained.stderr[-2000:], trained.exception)
    assert json.loads((run_dir / "metrics.json").read_text())["ap"] == 1.0  # clearly separated
    out = run_dir / "export"
    result = run("export", run_dir / "model.keras", "--saved-model", "--tflite",
                 "--quantize", "float16", "--quantize", "int8", "--output", out)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return run_dir, out, result


@pytest.mark.slow
def test_export_writes_every_format_and_passes_parity(round_trip):
    run_dir, out, result = round_trip
    paths = {"saved_model": out / "saved_model", "tflite-float32": out / "model.tflite",
             "tflite-float16": out / "model-float16.tflite", "tflite-int8": out / "model-int8.tflite"}
    assert (paths["saved_model"] / "saved_model.pb").is_file()
    for variant, path in paths.items():
        assert path.exists(), variant
        assert f"{variant}: max |score diff|" in result.stdout
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is True and parity["failures"] == []
    assert {r["variant"] for r in parity["results"]} == set(paths)
    assert all(r["passed"] for r in parity["results"])
    int8 = next(r for r in parity["results"] if r["variant"] == "tflite-int8")
    assert int8["ap_drop"] is not None and int8["ap_drop"] <= 0.01  # reported, and within one AP point
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert parity["threshold"] == pytest.approx(metrics["threshold"])  # the evaluated threshold travels along
    assert f"parity check passed on {parity['n_images']} images" in result.stdout


@pytest.fixture(scope="module")
def new_parts(tmp_path_factory):
    """New parts to predict on (other seed), three of them at other sizes: ``(folder, truth)``."""
    root = tmp_path_factory.mktemp("new_parts")
    truth = write_parts(root, 6, seed=99, sizes=((64, 128), (64, 128), (80, 200), (48, 96)))
    (root / "images" / "README.txt").write_text("ignored: not an image")
    return root / "images", truth


def _predict(model, images, out, *extra):
    result = run("predict", model, images, "--output", out, *extra)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    return result, rows


def test_predict_agrees_across_keras_saved_model_and_tflite(round_trip, new_parts, tmp_path):
    run_dir, out, _ = round_trip
    folder, truth = new_parts
    models = {"keras": run_dir / "model.keras", "saved_model": out / "saved_model",
              "tflite-float32": out / "model.tflite", "tflite-float16": out / "model-float16.tflite",
              "tflite-int8": out / "model-int8.tflite"}
    names = sorted(truth)
    threshold = json.loads((run_dir / "metrics.json").read_text())["threshold"]
    scores = {}
    for kind, model in models.items():
        result, rows = _predict(model, folder, tmp_path / kind)
        assert [Path(r["image"]).name for r in rows] == names
        assert f"{len(names)} images" in result.stdout and "predictions.csv" in result.stdout
        for row in rows:
            with Image.open(tmp_path / kind / "overlays" / Path(row["image"]).name) as overlay:
                with Image.open(row["image"]) as original:  # overlay: the image plus a score banner
                    assert overlay.width == original.width and overlay.height > original.height
        scores[kind] = np.array([float(r["score"]) for r in rows])
        decisions = np.array([int(r["decision"]) for r in rows])
        if kind in ("keras", "saved_model", "tflite-float32"):  # the run's threshold decides
            clear = np.abs(scores[kind] - threshold) > 1e-5  # away from float rounding of the threshold
            np.testing.assert_array_equal(decisions[clear], scores[kind][clear] >= threshold)
    for kind, tolerance in FORMAT_TOLERANCE.items():
        np.testing.assert_allclose(scores[kind], scores["keras"], atol=tolerance + 1e-6, err_msg=kind)
    defective = np.array([truth[name] for name in names])
    assert scores["keras"][defective].min() > scores["keras"][~defective].max()  # it learned, at any size


def test_predict_threshold_override_and_no_overlays(round_trip, new_parts, tmp_path):
    run_dir, out, _ = round_trip
    folder, _ = new_parts
    result, rows = _predict(out / "model.tflite", folder / "part00.*", tmp_path / "p",
                            "--threshold", "0", "--no-overlays")
    assert len(rows) == 1 and rows[0]["decision"] == "1"
    assert "1 images, 1 defective" in result.stdout
    assert not (tmp_path / "p" / "overlays").exists()


# --------------------------------------------------------- installed executable
def _executable():
    path = Path(sys.executable).with_name("kdefect")
    assert path.exists(), f"the kdefect console script is not installed next to this Python ({path})"
    return str(path)


@pytest.mark.slow
def test_installed_executable_help_and_one_line_error(tmp_path):
    exe = _executable()
    env = {**os.environ, "COLUMNS": "100"}
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and ok.stderr == ""
    assert "Usage: kdefect [OPTIONS] COMMAND" in ok.stdout
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(tmp_path / "a.png")
    # imports TensorFlow: its start-up chatter must not reach stderr either
    bad = subprocess.run([exe, "predict", tmp_path / "missing.keras", tmp_path], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.splitlines() == [f"Error: model {tmp_path / 'missing.keras'} does not exist"]
    assert bad.stdout == ""
    usage = subprocess.run([exe, "train", "--input-size", "12"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1 and "Traceback" not in usage.stderr
