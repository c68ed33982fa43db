"""Export: SavedModel and TFLite serving signatures, in-graph resize, parity, atomic writes.

One tiny random-weight SegDecNet (input 128x64x1) and its exports are built once
per session (``built_artifacts``, shared with ``test_predict.py``): random
weights are deterministic, which is all parity needs.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdefect.data.synthetic import make_surface, make_synthetic
from kdefect.errors import InputError
from kdefect.export import (
    ExportedModel,
    ParityError,
    check_parity,
    export_saved_model,
    export_tflite,
    judge_scores,
    keras_scores,
    tflite_interpreter,
)
from kdefect.model import SegDecNet

INPUT_SHAPE = (128, 64, 1)
THRESHOLD = 0.51
SIZES = [(128, 64), (200, 90), (64, 32), (256, 128)]  # model size, larger, smaller, 2x

_CACHE = {}


def built_artifacts(tmp_path_factory):
    """Build (once) the model, its .keras file, SavedModel and TFLite float32/float16/int8."""
    if "artifacts" not in _CACHE:
        root = tmp_path_factory.mktemp("export")
        keras.utils.set_random_seed(0)
        model = SegDecNet(input_shape=INPUT_SHAPE)
        keras_path = root / "run" / "model.keras"
        keras_path.parent.mkdir()
        model.save(keras_path)
        images, _, kinds = make_synthetic(12, *INPUT_SHAPE[:2], seed=1)
        labels = np.array([k is not None for k in kinds])
        rng = np.random.default_rng(2)
        sized = [make_surface(rng, h, w, kind="spot")[0] for h, w in SIZES]
        train_images, _, _ = make_synthetic(8, *INPUT_SHAPE[:2], seed=3)
        saved_model = export_saved_model(model, root / "saved_model", threshold=THRESHOLD)
        tflite = {
            q or "float32": export_tflite(
                saved_model, root / f"model_{q or 'float32'}.tflite", quantize=q,
                representative_images=train_images if q == "int8" else None,
            )
            for q in (None, "float16", "int8")
        }
        _CACHE["artifacts"] = SimpleNamespace(
            root=root, model=model, keras_path=keras_path, saved_model=saved_model,
            tflite=tflite, images=images, labels=labels, sized=sized,
        )
    return _CACHE["artifacts"]


@pytest.fixture(scope="session")
def art(tmp_path_factory):
    return built_artifacts(tmp_path_factory)


def _expected(model, image):
    """Keras score and heat-map computed here, independently of kdefect.export."""
    height, width = INPUT_SHAPE[:2]
    x = tf.image.resize(tf.cast(image[None], tf.float32), (height, width), "bilinear", antialias=False)
    x = tf.clip_by_value(tf.round(x), 0, 255) / 255.0
    logits, seg = model(x, training=False)
    heat = tf.image.resize(tf.sigmoid(seg), image.shape[:2], "bilinear", antialias=False)
    return float(tf.sigmoid(logits)[0, 0]), heat.numpy()[0, ..., 0]


# ------------------------------------------------------------------ SavedModel
def test_saved_model_reloads_without_kdefect(art):
    image = art.sized[1]
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(art.saved_model)!r})
        serve = loaded.signatures["serve"]
        spec = serve.structured_input_signature[1]["image"]
        image = np.load({str(art.root / "image.npy")!r})
        out = serve(image=tf.constant(image[None]))
        print(json.dumps({{
            "kdefect_imported": any(m.startswith("kdefect") for m in sys.modules),
            "signatures": sorted(loaded.signatures.keys()),
            "input": [spec.dtype.name, spec.shape.as_list()],
            "outputs": {{k: [v.dtype.name, v.shape.as_list()] for k, v in out.items()}},
            "score": float(out["score"][0]),
            "label": bool(out["label"][0]),
            "stored_threshold": float(loaded.threshold[0].numpy()),
        }}))
    """)
    np.save(art.root / "image.npy", image)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=art.root, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    h, w = image.shape[:2]
    assert got["kdefect_imported"] is False
    assert {"serve", "serving_default"} <= set(got["signatures"])
    assert got["input"] == ["uint8", [None, None, None, 1]]
    assert got["outputs"] == {
        "score": ["float32", [1]], "label": ["bool", [1]],
        "segmentation": ["float32", [1, h, w]], "threshold": ["float32", [1]],
    }
    score, _ = _expected(art.model, image)
    assert abs(got["score"] - score) <= 1e-4
    assert got["stored_threshold"] == pytest.approx(THRESHOLD)
    assert got["label"] == (got["score"] >= got["stored_threshold"])


@pytest.mark.parametrize("variant", ["saved_model", "float32", "float16", "int8"])
def test_any_input_size_is_resized_like_training(art, variant):
    exported = ExportedModel(art.saved_model if variant == "saved_model" else art.tflite[variant])
    tolerance = {"saved_model": 1e-4, "float32": 1e-4, "float16": 1e-2, "int8": 0.05}[variant]
    for image in art.sized:
        out = exported(image[None])
        score, heat = _expected(art.model, image)
        assert out["segmentation"].shape == (1, *image.shape[:2])
        assert 0.0 <= out["segmentation"].min() and out["segmentation"].max() <= 1.0
        assert abs(float(out["score"][0]) - score) <= tolerance
        assert np.abs(out["segmentation"][0] - heat).max() <= max(tolerance, 1e-4) * 10
        # float16 stores every constant in float16, int8 on the output's 1/256 grid
        rounding = {"float16": 5e-4, "int8": 1 / 256}.get(variant, 1e-7)
        assert out["threshold"][0] == pytest.approx(THRESHOLD, abs=rounding)
        if variant != "int8":
            assert bool(out["label"][0]) == (out["score"][0] >= out["threshold"][0])


# ---------------------------------------------------------------------- TFLite
def test_tflite_signature_and_variants(art):
    for variant, path in art.tflite.items():
        interpreter = tflite_interpreter(path)
        assert type(interpreter).__module__.startswith("ai_edge_litert")
        signatures = interpreter.get_signature_list()
        assert list(signatures) == ["serve"]
        assert signatures["serve"]["inputs"] == ["image"]
        assert sorted(signatures["serve"]["outputs"]) == ["label", "score", "segmentation", "threshold"]
        details = interpreter.get_signature_runner("serve").get_input_details()["image"]
        assert details["dtype"] == np.uint8
        assert details["shape_signature"].tolist() == [-1, -1, -1, 1]  # any size, resized inside
        assert ExportedModel(path).variant == f"tflite-{variant}"
    sizes = {v: p.stat().st_size for v, p in art.tflite.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_parity_report(art):
    paths = [art.saved_model, *art.tflite.values()]
    report = check_parity(art.model, paths, art.images, labels=art.labels, threshold=THRESHOLD)
    by_variant = {r["variant"]: r for r in report["results"]}
    print("\nparity:", json.dumps({v: {k: r[k] for k in ("max_abs_diff", "ap", "ap_drop",
                                                     "decision_agreement", "passed")}
                                   for v, r in by_variant.items()}, indent=1))
    assert report["n_images"] == len(art.images)
    for variant in ("saved_model", "tflite-float32", "tflite-float16"):
        assert by_variant[variant]["passed"], by_variant[variant]
    assert by_variant["saved_model"]["max_abs_diff"] <= 1e-4
    assert by_variant["tflite-float32"]["max_abs_diff"] <= 1e-4
    assert by_variant["tflite-float16"]["max_abs_diff"] <= 1e-2
    int8 = by_variant["tflite-int8"]
    assert int8["criterion"] == "AP drop <= 0.01"
    assert int8["ap_drop"] == pytest.approx(report["keras_ap"] - int8["ap"])
    # Random weights: scores span ~0.01, so int8 AP is noise; we check it tracks the float model.
    assert int8["max_abs_diff"] < 0.05
    assert report["passed"] == all(r["passed"] for r in report["results"])


def test_parity_failure_is_reported_and_raised(art):
    other = SegDecNet(input_shape=INPUT_SHAPE)  # different random weights
    report = check_parity(other, [art.saved_model], art.images[:2])
    assert not report["passed"]
    assert str(art.saved_model) in report["failures"][0]
    with pytest.raises(ParityError, match="max |score diff|"):
        check_parity(other, [art.saved_model], art.images[:2], raise_on_failure=True)


def test_judge_scores_criteria():
    ref = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    truth = np.array([0, 0, 1, 0, 1, 1], bool)
    assert judge_scores("tflite-float32", ref, ref + 5e-5, truth)["passed"]
    assert not judge_scores("tflite-float32", ref, ref + 2e-4, truth)["passed"]
    assert judge_scores("tflite-float16", ref, ref - 0.009, truth)["passed"]
    assert not judge_scores("tflite-float16", ref, ref + 0.02, truth)["passed"]
    kept = judge_scores("tflite-int8", ref, ref * 0.5, truth)  # same ranking: AP kept
    assert kept["passed"] and kept["ap_drop"] == 0.0 and kept["decision_agreement"] < 1
    swapped = judge_scores("tflite-int8", ref, ref[[0, 1, 2, 4, 3, 5]], truth)  # a negative passes a positive
    assert not swapped["passed"] and swapped["ap_drop"] > 0.01
    one_class = judge_scores("tflite-int8", ref, ref, np.ones(6, bool), threshold=0.5)
    assert one_class["criterion"] == "all decisions kept" and one_class["passed"]


# ---------------------------------------------------------------- bad input
def test_export_to_unwritable_path_writes_nothing(art, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    for target, export in [
        (blocker / "sm", lambda p: export_saved_model(art.model, p)),
        (blocker / "m.tflite", lambda p: export_tflite(art.saved_model, p)),
    ]:
        with pytest.raises(InputError, match=re.escape(str(target))):
            export(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_export_to_read_only_directory(art, tmp_path, monkeypatch):
    # Permissions are simulated: CI runs as root, which ignores a real chmod 0o500.
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(InputError, match=f"cannot write .*m.tflite: {re.escape(str(tmp_path))} is not writable"):
        export_tflite(art.saved_model, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_and_keeps_old_export(art, tmp_path, monkeypatch):
    import kdefect.export as export_module

    def broken(model, path, threshold):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    target = tmp_path / "sm"
    monkeypatch.setattr(export_module, "_write_saved_model", broken)
    with pytest.raises(InputError, match=re.escape(f"cannot write {target}: No space left")):
        export_saved_model(art.model, target)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_replace_other_things(art, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not a SavedModel"):
        export_saved_model(art.model, folder)
    with pytest.raises(InputError, match="is a directory"):
        export_tflite(art.saved_model, folder)
    assert (folder / "keep.txt").read_text() == "precious"


def test_export_replaces_an_existing_export(art, tmp_path):
    target = tmp_path / "sm"
    export_saved_model(art.model, target, threshold=0.2)
    export_saved_model(art.model, target, threshold=0.7)
    assert float(ExportedModel(target)(art.images[:1])["threshold"][0]) == pytest.approx(0.7)
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]


def test_export_argument_errors(art, tmp_path):
    with pytest.raises(InputError, match="quantize"):
        export_tflite(art.saved_model, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(InputError, match="representative"):
        export_tflite(art.saved_model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(InputError, match="stores its own threshold"):
        export_tflite(art.saved_model, tmp_path / "m.tflite", threshold=0.3)
    with pytest.raises(InputError, match="threshold"):
        export_saved_model(art.model, tmp_path / "sm", threshold=1.5)
    with pytest.raises(InputError, match="channel"):
        export_tflite(art.model, tmp_path / "m.tflite", quantize="int8",
                      representative_images=np.zeros((2, 128, 64, 3), np.uint8))
    with pytest.raises(InputError, match="not a SavedModel"):
        ExportedModel(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_keras_scores_match_the_model(art):
    x = art.images[:2].astype(np.float32) / 255.0
    logits = art.model(x, training=False)[0].numpy()[:, 0]
    np.testing.assert_allclose(keras_scores(art.model, art.images[:2]), 1 / (1 + np.exp(-logits)),
                               atol=1e-6)
