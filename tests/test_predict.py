"""Predict with .keras / SavedModel / .tflite models on files, folders and globs.

Uses the session's tiny model and exports from ``test_export.built_artifacts``.
"""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from kdefect.errors import InputError
from kdefect.predict import (
    DEFAULT_THRESHOLD,
    find_images,
    keras_threshold,
    load_predictor,
    overlay_image,
    predict_files,
    read_image,
)
from test_export import THRESHOLD, built_artifacts


@pytest.fixture(scope="session")
def art(tmp_path_factory):
    return built_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def predictors(art):
    return {
        "keras": load_predictor(art.keras_path),
        "saved_model": load_predictor(art.saved_model),
        **{f"tflite-{v}": load_predictor(p) for v, p in art.tflite.items()},
    }


@pytest.fixture(scope="session")
def image_dir(art, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, image in enumerate(art.sized):
        Image.fromarray(image[..., 0]).save(folder / f"surface_{i}.png")
    Image.fromarray(art.images[0][..., 0]).save(folder / "sample.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image, ignored in a folder")
    return folder


def _no_outputs(path):
    return not path.exists() or not any(path.iterdir())


def test_all_formats_give_the_same_predictions(predictors, art):
    images = list(art.sized)
    ref_scores, ref_maps = predictors["keras"].predict(images)
    tolerance = {"keras": 0, "saved_model": 1e-4, "tflite-float32": 1e-4, "tflite-float16": 1e-2,
                 "tflite-int8": 0.05}
    for kind, predictor in predictors.items():
        assert predictor.kind == kind and predictor.channels == 1
        scores, maps = predictor.predict(images)
        assert scores.dtype == np.float32 and scores.shape == (len(images),)
        np.testing.assert_allclose(scores, ref_scores, atol=tolerance[kind], err_msg=kind)
        for image, heat, ref in zip(images, maps, ref_maps):
            assert heat.shape == image.shape[:2]
            assert np.abs(heat - ref).max() <= max(tolerance[kind] * 10, 1e-4), kind


def test_batch_array_and_grayscale_2d_inputs(predictors, art):
    predictor = predictors["tflite-float32"]
    batch_scores, batch_maps = predictor.predict(art.images[:3])  # (B, H, W, 1)
    list_scores, _ = predictor.predict([img[..., 0] for img in art.images[:3]])  # (H, W) each
    np.testing.assert_array_equal(batch_scores, list_scores)
    assert len(batch_maps) == 3


def test_stored_thresholds(predictors, art, tmp_path):
    assert predictors["keras"].threshold == DEFAULT_THRESHOLD  # no metrics.json beside it
    assert predictors["saved_model"].threshold == pytest.approx(THRESHOLD)
    assert predictors["tflite-float32"].threshold == pytest.approx(THRESHOLD)
    assert predictors["tflite-float16"].threshold == pytest.approx(THRESHOLD, abs=5e-4)
    (tmp_path / "metrics.json").write_text(json.dumps({"ap": 0.9, "threshold": 0.37}))
    assert keras_threshold(tmp_path / "model.keras") == 0.37
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(InputError, match="metrics.json"):
        keras_threshold(tmp_path / "model.keras")
    scores = np.array([0.3, 0.5, 0.52])
    assert predictors["saved_model"].decide(scores).tolist() == [False, False, True]
    assert predictors["saved_model"].decide(scores, threshold=0.4).tolist() == [False, True, True]


def test_keras_threshold_from_metrics_json(art, tmp_path):
    model_path = tmp_path / "model.keras"
    model_path.write_bytes(art.keras_path.read_bytes())
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": 0.515}))
    predictor = load_predictor(model_path)
    assert predictor.threshold == 0.515
    scores, _ = predictor.predict(art.images[:1])
    assert predictor.threshold == pytest.approx(0.515)  # also what the graph reports


@pytest.mark.parametrize("kind", ["keras", "saved_model", "tflite-float32"])
def test_predict_files_writes_csv_and_overlays(predictors, image_dir, tmp_path, kind):
    out = tmp_path / "out"
    seen = []
    rows = predict_files(predictors[kind], [image_dir], out, callback=seen.append)
    assert [r["image"] for r in rows] == [str(p) for p in sorted(image_dir.glob("*.[pj]*g"))]
    assert seen == rows
    with open(out / "predictions.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["image", "score", "decision"]
    threshold = predictors[kind].threshold
    for row, written in zip(rows, table):
        assert written["image"] == row["image"]
        assert float(written["score"]) == pytest.approx(row["score"], abs=1e-6)
        assert int(written["decision"]) == int(row["score"] >= threshold) == row["decision"]
        overlay = Image.open(row["overlay"])
        source = Image.open(row["image"])
        assert overlay.mode == "RGB" and overlay.size == (source.width, source.height + 14)
        assert np.asarray(overlay).std() > 5  # not blank
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        f"{p.stem}.png" for p in image_dir.glob("*.[pj]*g"))


def test_predict_files_threshold_override_and_globs(predictors, image_dir, tmp_path):
    predictor = predictors["tflite-float32"]
    pattern = str(image_dir / "surface_*.png")
    low = predict_files(predictor, [pattern], tmp_path / "low", threshold=0.0, overlays=False)
    high = predict_files(predictor, [pattern], tmp_path / "high", threshold=1.0, overlays=False)
    assert len(low) == 4 and all(r["decision"] == 1 for r in low)
    assert all(r["decision"] == 0 for r in high)
    assert not (tmp_path / "low" / "overlays").exists()
    assert [r["score"] for r in low] == [r["score"] for r in high]


def test_same_stem_overlays_do_not_clash(predictors, art, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(art.images[0][..., 0]).save(tmp_path / sub / "x.png")
    rows = predict_files(predictors["tflite-int8"], [tmp_path / "a" / "x.png", tmp_path / "b"],
                         tmp_path / "out")
    assert [r["overlay"].rsplit("/", 1)[1] for r in rows] == ["x.png", "x_2.png"]


def test_rgb_file_with_gray_content_is_accepted(art, tmp_path):
    gray = art.images[0][..., 0]
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb_gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb_gray.png", 1)[..., 0], gray)
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "deep.png")  # 16-bit
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", 1)[..., 0], gray)


# ---------------------------------------------------------------- bad input
def test_non_image_file_is_named_and_nothing_written(predictors, image_dir, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(f"{bad} is not an image file")):
        predict_files(predictors["saved_model"], [image_dir, bad], out)
    assert _no_outputs(out)


def test_wrong_channel_count_for_tflite(predictors, art, tmp_path):
    rng = np.random.default_rng(0)
    colour = tmp_path / "colour.png"
    Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(colour)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(f"image {colour} is colour (RGB) but the model "
                                                   "expects grayscale")):
        predict_files(predictors["tflite-float32"], [colour], out)
    assert _no_outputs(out)
    with pytest.raises(InputError, match="3 channel"):
        predictors["tflite-float32"].predict([np.zeros((64, 32, 3), np.uint8)])
    with pytest.raises(InputError, match="uint8"):
        predictors["tflite-float32"].predict([np.zeros((64, 32), np.float32)])


def test_missing_inputs_and_models(predictors, image_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "nope.png"], "does not exist"),
        ([str(tmp_path / "*.bmp")], "no image matches"),
        ([tmp_path / "empty"], "no image in folder"),
        ([], "no input images"),
    ]
    for inputs, message in cases:
        with pytest.raises(InputError, match=message):
            find_images(inputs)
    with pytest.raises(InputError, match="does not exist"):
        load_predictor(tmp_path / "missing.keras")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="is not a .keras, SavedModel or .tflite model"):
        load_predictor(tmp_path / "junk.bin")
    with pytest.raises(InputError, match="not a SavedModel"):
        load_predictor(image_dir)
    with pytest.raises(InputError, match="threshold"):
        predict_files(predictors["tflite-float32"], [image_dir], tmp_path / "o", threshold=2)


def test_unwritable_output_dir(predictors, image_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create output directory"):
        predict_files(predictors["tflite-float32"], [image_dir], blocker / "out")


def test_overlay_highlights_the_heat():
    image = np.full((40, 20), 100, np.uint8)
    heat = np.zeros((40, 20), np.float32)
    heat[10:20, 5:15] = 1.0
    pixels = np.asarray(overlay_image(image, heat))
    assert (pixels[0, 0] == 100).all()  # no heat: image unchanged
    red, green, blue = pixels[15, 10].astype(int)
    assert red > green + 50 and red > blue + 50  # hot: (dark) red, as jet ends
