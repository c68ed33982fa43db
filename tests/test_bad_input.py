"""The bad-input matrix, through the CLI: each case is one ``Error: ...`` line naming the problem,
exit code 2, no traceback, and nothing half-written (no run directory, no output folder).

Tiny generated ``folder`` datasets (docs/DATA.md) for the data cases, the shared
KolektorSDD archive for the split/fold cases, the tiny exported model of
``test_export`` for export/predict.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdefect_cli.main import main

from conftest import SHARED

KSDD_ZIP = SHARED / "datasets" / "KolektorSDD.zip"
SIZE = "64x128"


def run(*args, env=None):
    """``kdefect ARGS...`` in-process (stdout and stderr kept apart)."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="kdefect", env=env)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def _image(path, size=(64, 128), value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size, dtype=np.uint8) if value is None else np.full(size, value, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _mask(path, size=(64, 128)):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    mask[size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] = 255
    Image.fromarray(mask).save(path)
    return path


def folder_dataset(root, positives=2, negatives=4):
    """A valid ``folder`` dataset: ``positives`` images with masks plus ``negatives`` clean ones."""
    for i in range(positives + negatives):
        _image(root / "images" / f"part_{i}.png", seed=i)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(positives):
        _mask(root / "masks" / f"part_{i}.png")
    return root


def train_folder(data_dir, output, *extra):
    return run("train", "--dataset", "folder", "--data-dir", data_dir, "--input-size", SIZE, "--epochs", 1,
               "--no-figures", "-q", "--output", output, *extra)


# ------------------------------------------------------------------ data
def test_missing_data_directory(tmp_path):
    missing, out = tmp_path / "missing", tmp_path / "run"
    assert_one_line_error(train_folder(missing, out), missing, "does not exist")
    assert not out.exists() and not missing.exists()


def test_empty_data_directory(tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    assert_one_line_error(train_folder(empty, out), empty, "empty")
    assert not out.exists() and not any(empty.iterdir())


def test_corrupt_image(tmp_path):
    data, out = folder_dataset(tmp_path / "data"), tmp_path / "run"
    bad = data / "images" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    assert_one_line_error(train_folder(data, out), bad)
    assert not out.exists()


def test_mask_of_another_size(tmp_path):
    data, out = folder_dataset(tmp_path / "data"), tmp_path / "run"
    _mask(data / "masks" / "part_1.png", size=(10, 10))
    assert_one_line_error(train_folder(data, out), data / "masks" / "part_1.png", "10x10", "same size")
    assert not out.exists()


def test_mask_without_its_image(tmp_path):
    data, out = folder_dataset(tmp_path / "data"), tmp_path / "run"
    _mask(data / "masks" / "ghost.png")
    assert_one_line_error(train_folder(data, out), "ghost", "no image")
    assert not out.exists()


def test_training_set_without_defective_images(tmp_path):
    data, out = folder_dataset(tmp_path / "data", positives=0, negatives=6), tmp_path / "run"
    assert_one_line_error(train_folder(data, out), "0 defective", "no positive")
    assert not out.exists()


def test_batch_larger_than_an_epoch(tmp_path):
    data, out = folder_dataset(tmp_path / "data", positives=4, negatives=6), tmp_path / "run"
    assert_one_line_error(train_folder(data, out, "--batch-size", 64), "batch size 64 is larger than an epoch")
    assert not out.exists()


# --------------------------------------------------------------- options
def test_input_size_not_divisible_by_8(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(run("train", "--input-size", "60x128", "--output", out), "60x128", "divisible by 8")
    config = tmp_path / "c.yaml"
    config.write_text("input_size: [64, 100]\n")
    assert_one_line_error(run("train", "--config", config, "--output", out), "64x100", "divisible by 8")
    assert not out.exists()


def test_unknown_dataset_name(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(run("train", "--dataset", "nope", "--output", out), "'nope'")
    config = tmp_path / "c.yaml"
    config.write_text("dataset: nope\n")
    assert_one_line_error(run("train", "--config", config, "--output", out), "unknown dataset 'nope'")
    assert not out.exists()


@pytest.fixture()
def ksdd_env(tmp_path_factory):
    assert KSDD_ZIP.exists(), f"the shared KolektorSDD archive is missing: {KSDD_ZIP}"
    return {"KDEFECT_DATA_DIR": str(KSDD_ZIP)}


def test_positives_the_split_does_not_have(tmp_path, ksdd_env):
    out = tmp_path / "run"
    result = run("train", "--dataset", "ksdd", "--positives", 7, "--output", out, env=ksdd_env)
    assert_one_line_error(result, "split_7_7", "split_10_10")
    assert not out.exists()


def test_fold_the_split_does_not_have(tmp_path, ksdd_env):
    out = tmp_path / "run"
    result = run("train", "--dataset", "ksdd", "--positives", 10, "--fold", 5, "--output", out, env=ksdd_env)
    assert_one_line_error(result, "fold 5", "0, 1, 2")
    assert not out.exists()


# ---------------------------------------------------------------- config
def test_unreadable_yaml_config(tmp_path):
    out = tmp_path / "run"
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\nlr: 0.1\n")
    assert_one_line_error(run("train", "--config", broken, "--output", out), broken, "not valid YAML")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x00")
    assert_one_line_error(run("train", "--config", binary, "--output", out), binary)
    assert not out.exists()


def test_yaml_config_with_unknown_key(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\nlearning_rate: 0.1\n")
    assert_one_line_error(run("train", "--config", config, "--output", out), "unknown key 'learning_rate'")
    assert not out.exists()


def test_yaml_config_with_wrong_type(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("epochs: many\n")
    assert_one_line_error(run("train", "--config", config, "--output", out), "epochs", "int", "'many'")
    assert not out.exists()


def test_yaml_config_with_unknown_annotation(tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("annotation: polygons\n")
    assert_one_line_error(run("train", "--config", config, "--output", out), "annotation", "'polygons'")
    assert not out.exists()


# ------------------------------------------------------ export / predict
@pytest.fixture(scope="module")
def art(tmp_path_factory):
    from test_export import built_artifacts

    return built_artifacts(tmp_path_factory)


def test_export_to_a_path_that_cannot_be_written(art, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")
    target = blocker / "export"
    line = assert_one_line_error(run("export", art.keras_path, "--output", target))
    assert str(blocker) in line
    assert blocker.read_text() == "a file, not a folder"
    assert not list(art.keras_path.parent.glob("export*"))


def test_predict_on_a_non_image_file(art, tmp_path):
    notes, out = tmp_path / "notes.png", tmp_path / "out"
    notes.write_text("plain text with an image extension")
    assert_one_line_error(run("predict", art.keras_path, notes, "--output", out), notes, "not an image")
    assert not out.exists()
    text = tmp_path / "notes.txt"
    text.write_text("plain text")
    assert_one_line_error(run("predict", art.keras_path, text, "--output", out), text)
    assert not out.exists()


def test_tflite_model_given_an_image_with_the_wrong_channels(art, tmp_path):
    colour, out = tmp_path / "colour.png", tmp_path / "out"
    rgb = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(colour)
    result = run("predict", art.tflite["float32"], colour, "--output", out)
    assert_one_line_error(result, colour, "colour (RGB)", "grayscale")
    assert not out.exists()


# ------------------------------------------------- the real process too
def test_one_line_on_the_real_stderr(tmp_path):
    """As an installed executable (fresh process, TensorFlow's own stderr output included)."""
    data, out = folder_dataset(tmp_path / "data"), tmp_path / "run"
    _mask(data / "masks" / "part_1.png", size=(10, 10))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    done = subprocess.run([sys.executable, "-m", "kdefect_cli.main", "train", "--dataset", "folder",
                           "--data-dir", str(data), "--input-size", SIZE, "--output", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: mask "), done.stderr
    assert not out.exists()
