"""Export a SegDecNet for serving: SavedModel and TFLite, with the pre/post-processing inside.

The exported graph has one endpoint, ``serve`` (also ``serving_default`` in the
SavedModel), that takes raw **uint8** images of any size, shape
``(B, H, W, C)``, input name ``image``, and returns named outputs:

* ``score`` (B,) float32: sigmoid of the decision logit;
* ``label`` (B,) bool: ``score >= threshold``;
* ``segmentation`` (B, H, W) float32: sigmoid heat-map resized back to H x W;
* ``threshold`` (B,) float32: the stored decision threshold (so every format,
  TFLite included, can report the value it decides with). TFLite float16
  stores it, like every constant, in float16 (0.51 -> 0.50977) and int8 on
  the score's 1/256 grid: this output is the value that file really uses.

Inside the graph each image is resized to the model's input size exactly like
the training pipeline does (bilinear, half-pixel centres, no antialias, rounded
back to 0..255), then divided by 255. An exported model therefore cannot
disagree with the Keras one because of forgotten preprocessing.

TFLite files keep the same signature (``serve``) with a dynamic input shape
``[-1, -1, -1, C]``: the LiteRT signature runner resizes its tensors for each
input. Measured on the (128, 64, 1) test model, a dynamic-shape float32 file
runs within ~10 % of a fixed-shape one at the model's own size (54 vs 50 ms),
so dynamic is used everywhere: the in-graph resize is the point of the export.

Run TFLite files with ``ai_edge_litert.interpreter.Interpreter`` through
``get_signature_runner("serve")`` (output order is not stable; names are).
Loading a SavedModel needs only TensorFlow, not kdefect.

``check_parity`` compares every exported variant against the Keras model.
"""

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kdefect.errors import InputError

SERVING_ENDPOINT = "serve"
INPUT_NAME = "image"
OUTPUT_NAMES = ("score", "label", "segmentation", "threshold")
QUANTIZATIONS = (None, "float16", "int8")
# Parity criteria: max |score - keras score| per variant; int8 is judged on AP instead.
SCORE_TOLERANCES = {"saved_model": 1e-4, "tflite-float32": 1e-4, "tflite-float16": 1e-2}
INT8_MAX_AP_DROP = 0.01  # one AP point


class ParityError(RuntimeError):
    """An exported model disagrees with its Keras model; ``.report`` holds the details."""

    def __init__(self, report):
        super().__init__("export parity check failed: " + "; ".join(report["failures"]))
        self.report = report


# ----------------------------------------------------------------- utilities
def model_image_shape(model):
    """The model's fixed input size ``(H, W, C)``.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> model_image_shape(SegDecNet(input_shape=(128, 64, 1)))
    (128, 64, 1)
    """
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(v is None for v in shape):
        raise ValueError(f"model input must be (H, W, C) with known sizes, got {shape}")
    return tuple(int(v) for v in shape)


def as_uint8_images(images, channels):
    """Validate images and return them as a list of uint8 ``(H, W, C)`` arrays.

    ``images`` is a list/tuple of single images, each ``(H, W)`` (grayscale) or
    ``(H, W, C)``, sizes may differ; or one array holding a batch, ``(B, H, W)``
    or ``(B, H, W, C)``. Values must be integers in 0..255. Raises
    ``InputError`` on a wrong channel count, dtype or shape.

    Example:
    >>> [a.shape for a in as_uint8_images(np.zeros((2, 8, 8), np.uint8), channels=1)]
    [(8, 8, 1), (8, 8, 1)]
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise InputError(
                f"an image batch must have shape (B, H, W) or (B, H, W, C), got {images.shape}; "
                "pass single images in a list"
            )
        images = list(images)
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise InputError(f"image {i} must have shape (H, W) or (H, W, C), got {image.shape}")
        if image.shape[-1] != channels:
            raise InputError(
                f"image {i} has {image.shape[-1]} channel(s) but the model expects {channels}"
            )
        if image.dtype != np.uint8:
            if not np.issubdtype(image.dtype, np.integer) or image.min() < 0 or image.max() > 255:
                raise InputError(
                    f"image {i} must hold uint8 values 0..255, got dtype {image.dtype}"
                )
            image = image.astype(np.uint8)
        out.append(image)
    if not out:
        raise InputError("no images given")
    return out


def preprocess(images, height, width):
    """uint8 batch (B, h, w, C) of any size -> float32 in [0, 1] at (height, width).

    Bilinear resize with half-pixel centres and no antialias, rounded back to
    0..255, as the training pipeline does; identity at the model's own size.

    Example:
    >>> x = preprocess(np.full((1, 20, 10, 1), 255, np.uint8), 16, 8)
    >>> tuple(x.shape), float(x.numpy().max())
    ((1, 16, 8, 1), 1.0)
    """
    x = tf.cast(images, tf.float32)
    x = tf.image.resize(x, (height, width), method="bilinear", antialias=False)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return x / 255.0


def make_serving_fn(model, threshold):
    """The ``serve`` function: uint8 images -> dict of ``OUTPUT_NAMES`` tensors.

    ``threshold`` is a scalar variable (or float). Used by the exports and by
    ``kdefect.predict`` for ``.keras`` models, so all three agree by construction.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> serve = make_serving_fn(SegDecNet(input_shape=(128, 64, 1)), 0.5)
    >>> sorted(serve(np.zeros((1, 100, 50, 1), np.uint8)))
    ['label', 'score', 'segmentation', 'threshold']
    """
    height, width, _ = model_image_shape(model)

    def serve(image):
        x = preprocess(image, height, width)
        decision_logits, seg_logits = model(x, training=False)
        score = tf.sigmoid(tf.cast(decision_logits[:, 0], tf.float32))
        heat = tf.sigmoid(tf.cast(seg_logits, tf.float32))
        heat = tf.image.resize(heat, tf.shape(image)[1:3], method="bilinear", antialias=False)
        thr = tf.cast(tf.convert_to_tensor(threshold), tf.float32)
        return {
            "score": score,
            "label": score >= thr,
            "segmentation": heat[..., 0],
            "threshold": tf.fill(tf.shape(score), thr),
        }

    return serve


def check_threshold(threshold):
    """Validate a decision threshold (a score in [0, 1]); ``InputError`` otherwise.

    Example:
    >>> check_threshold("0.25")
    0.25
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"threshold must be in [0, 1] (it applies to sigmoid scores), got {value}")
    return value


def load_keras_model(path, compile=False):
    """Load a kdefect ``.keras`` file; ``InputError`` (one line) if it is missing or not a model.

    Registers kdefect's custom classes first (``import kdefect`` alone is lazy
    and does not), so this works in a fresh process.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> SegDecNet(input_shape=(128, 64, 1)).save("/tmp/kd_load.keras")
    >>> load_keras_model("/tmp/kd_load.keras").name
    'segdecnet'
    >>> load_keras_model("/nonexistent/model.keras")
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: model /nonexistent/model.keras does not exist
    """
    import kdefect.model  # noqa: F401  (registers SegDecNet and its layers)

    path = Path(path)
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a .keras model file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError as err:
        raise InputError(f"cannot read model {path}: {err.strerror or err}") from None
    if head != b"PK":  # .keras files are zip archives
        raise InputError(f"{path} is not a .keras model file")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load Keras model {path}: {reason[:300]}") from None


def _as_keras_model(model):
    """The float32 Keras model to export (a mixed-precision model is copied to float32, see ``float32_copy``)."""
    from kdefect.model import float32_copy

    if isinstance(model, keras.Model):
        return float32_copy(model)
    path = Path(model)
    if path.suffix != ".keras" and not path.is_file():
        raise InputError(f"expected a Keras model or a .keras file, got {model!s}")
    return float32_copy(load_keras_model(path))


def _check_target(path, is_dir):
    """Fail early (before any slow work) if ``path`` cannot take the export."""
    path = Path(path)
    if path.exists():
        if is_dir and not (path.is_dir() and (path / "saved_model.pb").exists()):
            raise InputError(f"cannot export to {path}: it exists and is not a SavedModel directory")
        if not is_dir and path.is_dir():
            raise InputError(f"cannot export to {path}: it is a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {ancestor} is not writable")


@contextlib.contextmanager
def _atomic_path(path, is_dir):
    """Yield a temporary sibling path; on success move it to ``path``, else delete it.

    An existing target is replaced only if it is of the same kind (a SavedModel
    directory, or a file). Any failure to write raises ``InputError`` naming
    ``path`` and leaves neither the temporary nor a partial target behind.
    """
    path = Path(path)
    _check_target(path, is_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if is_dir and path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # put the previous export back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except (OSError, tf.errors.OpError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "message", None) or str(err)
        raise InputError(f"cannot write {path}: {reason.splitlines()[0]}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


# -------------------------------------------------------------------- export
def _write_saved_model(model, path, threshold):
    threshold_var = keras.Variable(threshold, dtype="float32", trainable=False, name="threshold")
    channels = model_image_shape(model)[2]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_variable_collection("threshold", [threshold_var])
    archive.add_endpoint(
        SERVING_ENDPOINT,
        make_serving_fn(model, threshold_var),
        input_signature=[tf.TensorSpec((None, None, None, channels), tf.uint8, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def export_saved_model(model, path, threshold=0.5):
    """Write a SavedModel with the ``serve`` endpoint (see the module docstring).

    Args:
        model: a ``SegDecNet`` (or a path to its ``.keras`` file).
        path: output directory; an existing SavedModel there is replaced.
        threshold: decision threshold on the score, stored in the export.

    Returns the path. Raises ``InputError`` if the path cannot be written
    (nothing is left behind).

    Example:
    >>> from kdefect.model import SegDecNet
    >>> path = export_saved_model(SegDecNet(input_shape=(128, 64, 1)), "/tmp/kd_sm", 0.4)
    >>> served = tf.saved_model.load(str(path)).signatures["serve"]
    >>> out = served(image=tf.zeros((1, 300, 100, 1), tf.uint8))
    >>> tuple(out["segmentation"].shape), round(float(out["threshold"][0]), 6)
    ((1, 300, 100), 0.4)
    """
    model = _as_keras_model(model)
    threshold = check_threshold(threshold)
    _check_target(path, is_dir=True)
    with _atomic_path(path, is_dir=True) as tmp:
        _write_saved_model(model, tmp, threshold)
    return Path(path)


def _representative_dataset(images):
    def generate():
        for image in images:
            yield {INPUT_NAME: image[None]}

    return generate


def export_tflite(model_or_saved_model, path, quantize=None, representative_images=None,
                  threshold=None):
    """Convert to a TFLite file with the same ``serve`` signature and outputs.

    Args:
        model_or_saved_model: a ``SegDecNet`` (or its ``.keras`` path), or the
            directory of a SavedModel written by ``export_saved_model``.
        path: output ``.tflite`` file (replaced if it exists).
        quantize: None (float32), ``"float16"`` (weights in float16), or
            ``"int8"`` (full integer: every op int8; the uint8 image input and
            the float outputs are converted at the graph's ends).
        representative_images: uint8 training images for the int8 calibration
            (any sizes; 50-200 are typical). Required for ``"int8"``.
        threshold: decision threshold for a Keras model (default 0.5). A
            SavedModel already stores its own; passing one then is an error.

    Returns the path; raises ``InputError`` on bad arguments or an unwritable path.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> p = export_tflite(SegDecNet(input_shape=(128, 64, 1)), "/tmp/kd.tflite", "float16")
    >>> from ai_edge_litert.interpreter import Interpreter
    >>> runner = Interpreter(str(p)).get_signature_runner("serve")
    >>> sorted(runner(image=np.zeros((1, 128, 64, 1), np.uint8)))
    ['label', 'score', 'segmentation', 'threshold']
    """
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of None, 'float16', 'int8', got {quantize!r}")
    if quantize == "int8" and representative_images is None:
        raise InputError("int8 quantization needs representative images (from the training set)")
    _check_target(path, is_dir=False)
    model, saved_model = None, None
    if isinstance(model_or_saved_model, (str, os.PathLike)) and Path(model_or_saved_model).is_dir():
        saved_model = Path(model_or_saved_model)
        if not (saved_model / "saved_model.pb").exists():
            raise InputError(f"{saved_model} is not a SavedModel directory")
        if threshold is not None:
            raise InputError(
                f"the SavedModel {saved_model} stores its own threshold; "
                "export from the Keras model to change it"
            )
        channels = _saved_model_channels(saved_model)
    else:
        model = _as_keras_model(model_or_saved_model)
        threshold = check_threshold(0.5 if threshold is None else threshold)
        channels = model_image_shape(model)[2]
    if quantize == "int8":
        representative_images = as_uint8_images(representative_images, channels)
    with contextlib.ExitStack() as stack:
        if model is not None:
            saved_model = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sm"
            _write_saved_model(model, saved_model, threshold)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model), signature_keys=[SERVING_ENDPOINT]
        )
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative_dataset(representative_images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with warnings.catch_warnings():  # the int8 calibrator uses tf.lite.Interpreter inside TF
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            flatbuffer = converter.convert()
    with _atomic_path(path, is_dir=False) as tmp:
        tmp.write_bytes(flatbuffer)
    return Path(path)


def _saved_model_channels(saved_model):
    spec = tf.saved_model.load(str(saved_model)).signatures[SERVING_ENDPOINT].structured_input_signature
    return int(spec[1][INPUT_NAME].shape[-1])


# ------------------------------------------------------------------- running
def tflite_interpreter(path, num_threads=None):
    """A LiteRT ``Interpreter`` for ``path`` (``tf.lite.Interpreter`` only if ai-edge-litert is missing).

    ``num_threads`` defaults to every core this process may use: LiteRT's own
    default ran a 704x256 float32 model 1.85x slower (int8 1.2x) on 2 cores
    (docs/PERFORMANCE.md).

    Example:
    >>> runner = tflite_interpreter("/tmp/kd.tflite").get_signature_runner("serve")
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        Interpreter = tf.lite.Interpreter
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Interpreter(model_path=str(path), num_threads=num_threads)


def tflite_variant(interpreter):
    """``"int8"``, ``"float16"`` or ``"float32"``, from the tensor types of a TFLite model.

    Example:
    >>> tflite_variant(tflite_interpreter("/tmp/kd.tflite"))
    'float16'
    """
    dtypes = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    if np.dtype(np.int8) in dtypes:
        return "int8"
    if np.dtype(np.float16) in dtypes:
        return "float16"
    return "float32"


class ExportedModel:
    """Run a SavedModel directory or a ``.tflite`` file written by this module.

    Call it on one uint8 batch ``(B, H, W, C)`` to get a dict of NumPy outputs
    named as in ``OUTPUT_NAMES``. ``variant`` is ``"saved_model"`` or
    ``"tflite-float32|float16|int8"``; ``channels`` the expected C.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> path = export_tflite(SegDecNet(input_shape=(128, 64, 1)), "/tmp/kd_f32.tflite")
    >>> exported = ExportedModel(path)
    >>> exported.variant, exported.channels
    ('tflite-float32', 1)
    >>> exported(np.zeros((1, 64, 32, 1), np.uint8))["segmentation"].shape
    (1, 64, 32)
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            if not (self.path / "saved_model.pb").exists():
                raise InputError(f"{self.path} is not a SavedModel directory (no saved_model.pb)")
            signatures = tf.saved_model.load(str(self.path)).signatures
            if SERVING_ENDPOINT not in signatures:
                raise InputError(f"SavedModel {self.path} has no '{SERVING_ENDPOINT}' signature")
            self._fn = signatures[SERVING_ENDPOINT]
            self.channels = int(self._fn.structured_input_signature[1][INPUT_NAME].shape[-1])
            self.variant = "saved_model"
        else:
            try:
                interpreter = tflite_interpreter(self.path)
                self._fn = interpreter.get_signature_runner(SERVING_ENDPOINT)
            except ValueError as err:
                raise InputError(f"{self.path} is not a kdefect TFLite model: {err}") from None
            self.channels = int(self._fn.get_input_details()[INPUT_NAME]["shape_signature"][-1])
            self.variant = "tflite-" + tflite_variant(interpreter)

    def __call__(self, batch):
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != self.channels or batch.dtype != np.uint8:
            raise InputError(
                f"{self.path.name} expects uint8 images of shape (B, H, W, {self.channels}), "
                f"got {batch.dtype} {batch.shape}"
            )
        if self.variant == "saved_model":
            outputs = self._fn(**{INPUT_NAME: tf.constant(batch)})
            return {name: value.numpy() for name, value in outputs.items()}
        return dict(self._fn(**{INPUT_NAME: batch}))


def keras_scores(model, images):
    """Reference scores of the Keras model itself (eager, no export involved).

    Example:
    >>> from kdefect.model import SegDecNet
    >>> keras_scores(SegDecNet(input_shape=(128, 64, 1)), [np.zeros((128, 64), np.uint8)]).shape
    (1,)
    """
    height, width, channels = model_image_shape(model)
    scores = []
    for image in as_uint8_images(images, channels):
        logits, _ = model(preprocess(image[None], height, width), training=False)
        scores.append(float(tf.sigmoid(tf.cast(logits, tf.float32))[0, 0]))
    return np.asarray(scores, np.float32)


# -------------------------------------------------------------------- parity
def _average_precision(labels, scores):
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def judge_scores(variant, reference, scores, truth, threshold=0.5):
    """Apply the parity criterion of ``variant`` to exported ``scores`` vs Keras ``reference``.

    ``truth`` holds the image labels the int8 AP is computed on. Returns a dict
    with variant, max_abs_diff, decision_agreement, ap, ap_drop, criterion,
    passed and a one-line ``detail``.

    Example:
    >>> ref = np.array([0.1, 0.4, 0.6, 0.9])
    >>> judge_scores("tflite-float16", ref, ref + 0.02, ref > 0.5)["passed"]
    False
    >>> judge_scores("tflite-int8", ref, ref + 0.02, ref > 0.5)["ap_drop"]
    0.0
    """
    reference = np.asarray(reference, np.float64)
    scores = np.asarray(scores, np.float64)
    truth = np.asarray(truth, bool)
    two_classes = truth.min() != truth.max()
    diff = float(np.max(np.abs(scores - reference)))
    agreement = float(np.mean((scores >= threshold) == (reference >= threshold)))
    result = {
        "variant": variant,
        "max_abs_diff": diff,
        "decision_agreement": agreement,
        "ap": _average_precision(truth, scores) if two_classes else None,
        "ap_drop": None,
    }
    if variant in SCORE_TOLERANCES:
        tolerance = SCORE_TOLERANCES[variant]
        result["criterion"] = f"max |score diff| <= {tolerance:g}"
        result["passed"] = diff <= tolerance
        result["detail"] = f"max |score diff| {diff:.3g} (limit {tolerance:g})"
    elif two_classes:
        drop = _average_precision(truth, reference) - result["ap"]
        result["ap_drop"] = drop
        result["criterion"] = f"AP drop <= {INT8_MAX_AP_DROP:g}"
        result["passed"] = drop <= INT8_MAX_AP_DROP
        result["detail"] = f"AP drop {drop:.4f} (limit {INT8_MAX_AP_DROP:g}), AP {result['ap']:.4f}"
    else:
        result["criterion"] = "all decisions kept"
        result["passed"] = agreement == 1.0
        result["detail"] = f"decision agreement {agreement:.3f} (must be 1)"
    return result


def check_parity(model, exported_paths, images, labels=None, threshold=0.5,
                 raise_on_failure=False):
    """Compare the scores of exported models with the Keras model's on sample images.

    Criteria (``SCORE_TOLERANCES``, ``INT8_MAX_AP_DROP``): SavedModel and
    float32 TFLite within 1e-4 of the Keras score, float16 within 1e-2; int8
    keeps the image-level AP within 1 point (``ap_drop <= 0.01``). The int8 AP
    uses ``labels`` (1 = defective) when given, else the Keras decisions
    ``score >= threshold`` as labels (then Keras AP is 1); if those hold only
    one class the int8 criterion is that every decision is kept.

    Args:
        model: the Keras ``SegDecNet``.
        exported_paths: SavedModel directories and/or ``.tflite`` files
            (the variant is detected from the file).
        images: uint8 images (see ``as_uint8_images``), any sizes.
        labels: optional ground-truth image labels for the int8 AP.
        threshold: decision threshold for the agreement numbers.
        raise_on_failure: raise ``ParityError`` instead of returning a failed report.

    Returns ``{"passed", "n_images", "keras_ap", "results": [per-path dicts with
    path, variant, max_abs_diff, criterion, passed, decision_agreement, ap,
    ap_drop], "failures": [one line each]}``.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> model = SegDecNet(input_shape=(128, 64, 1))
    >>> sm = export_saved_model(model, "/tmp/kd_parity_sm")
    >>> report = check_parity(model, [sm], [np.zeros((128, 64, 1), np.uint8)])
    >>> report["passed"], report["results"][0]["variant"]
    (True, 'saved_model')
    """
    images = as_uint8_images(images, model_image_shape(model)[2])
    reference = keras_scores(model, images)
    keras_decisions = reference >= threshold
    truth = keras_decisions if labels is None else np.asarray(labels).reshape(-1).astype(bool)
    if truth.shape != reference.shape:
        raise InputError(f"got {truth.size} labels for {reference.size} images")
    keras_ap = _average_precision(truth, reference) if truth.min() != truth.max() else None
    results, failures = [], []
    for path in exported_paths:
        exported = ExportedModel(path)
        scores = np.concatenate([exported(image[None])["score"] for image in images])
        result = {"path": str(path), **judge_scores(exported.variant, reference, scores, truth, threshold)}
        if not result["passed"]:
            failures.append(f"{path} ({exported.variant}): {result['detail']}")
        results.append(result)
    report = {
        "passed": not failures,
        "n_images": len(images),
        "keras_ap": keras_ap,
        "results": results,
        "failures": failures,
    }
    if failures and raise_on_failure:
        raise ParityError(report)
    return report


def export_model(model_path, output, saved_model=True, tflite=False, quantize=None,
                 images=None, labels=None, threshold=None, representative=None):
    """Export a trained ``.keras`` model to the requested formats and check parity.

    This is what ``kdefect export`` runs. The threshold is the one chosen at
    evaluation (``metrics.json`` next to the model) unless given.
    Representative images for int8 and the parity images are ``images``.

    Args:
        model_path: the ``.keras`` file (e.g. ``runs/x/model.keras``).
        output: output directory; receives ``saved_model/`` and/or
            ``model[-float16|-int8].tflite`` and ``parity.json``.
        saved_model, tflite: which formats to write.
        quantize: the TFLite variant(s): None or ``"float32"``, ``"float16"``,
            ``"int8"``, or a list of them to write several files at once
            (one parity check covers them all).
        images: uint8 images for int8 calibration and the parity check.
        labels: their image labels, for the int8 AP criterion.
        threshold: decision threshold override.
        representative: uint8 training images for int8 calibration (default: ``images``).

    Returns the parity report (with ``paths``). Raises ``ParityError`` when
    an export disagrees with the Keras model beyond the tolerances.

    Example:
    >>> from kdefect.model import SegDecNet
    >>> SegDecNet(input_shape=(128, 64, 1)).save("/tmp/kd_exp.keras")
    >>> report = export_model("/tmp/kd_exp.keras", "/tmp/kd_exp_out", images=[np.zeros((128, 64, 1), np.uint8)])
    >>> report["passed"], sorted(p.name for p in report["paths"])
    (True, ['saved_model'])
    """
    import json

    from kdefect.predict import keras_threshold

    variants = list(quantize) if isinstance(quantize, (list, tuple)) else [quantize]
    variants = list(dict.fromkeys(None if v in (None, "float32") else v for v in variants)) or [None]
    for variant in variants:
        if variant not in QUANTIZATIONS:
            raise InputError(f"quantize must be 'float32', 'float16' or 'int8', got {variant!r}")
    model = _as_keras_model(model_path)
    threshold = keras_threshold(model_path) if threshold is None else check_threshold(threshold)
    output = Path(output)
    if not (saved_model or tflite):
        raise InputError("nothing to export: choose --saved-model and/or --tflite")
    if images is None or len(images) == 0:
        raise InputError("export needs sample images for the parity check")
    if output.exists() and not output.is_dir():
        raise InputError(f"cannot export to {output}: it exists and is not a directory")
    _check_target(output, is_dir=True) if not output.exists() else None
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    with contextlib.ExitStack() as stack:
        # TFLite converts from a SavedModel; without --saved-model it is a temporary one.
        sm_path = (output / "saved_model" if saved_model
                   else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sm")
        export_saved_model(model, sm_path, threshold)
        if saved_model:
            paths.append(sm_path)
        for variant in variants if tflite else ():
            suffix = f"-{variant}" if variant else ""
            calibration = images if representative is None else representative
            paths.append(export_tflite(sm_path, output / f"model{suffix}.tflite", quantize=variant,
                                       representative_images=calibration if variant == "int8" else None))
    report = check_parity(model, paths, images, labels=labels, threshold=threshold)
    report["threshold"] = threshold
    (output / "parity.json").write_text(json.dumps(report, indent=2, default=str))
    report["paths"] = paths
    if not report["passed"]:
        raise ParityError(report)
    return report
