"""Run a trained or exported SegDecNet on images: scores, decisions and heat-map overlays.

``load_predictor`` accepts a ``.keras`` file, a SavedModel directory or a
``.tflite`` file (as written by ``kdefect.export``). All three run the same
``serve`` graph (``kdefect.export.make_serving_fn``): raw uint8 images of any
size in, the image resized to the model's input size inside, a score per image
and a heat-map at the image's own size out.

Which threshold decides (``score >= threshold``):

* an explicit ``threshold`` argument (the CLI's ``--threshold``) wins;
* a SavedModel or TFLite export decides with the threshold stored in it;
* a ``.keras`` file uses ``threshold`` from a ``metrics.json`` next to it (what
  an evaluation run writes), else ``DEFAULT_THRESHOLD`` (0.5).

Images are decoded with their own channel count and must match the model:
a colour image given to a colour model, a grayscale one to a grayscale model.
As an exception, an RGB file whose three channels are equal (grayscale stored
as RGB, common for JPEGs) is accepted by a grayscale model. 16-bit images are
scaled to 8 bits.
"""

import csv
import glob
import json
import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, UnidentifiedImageError

from kdefect.errors import InputError
from kdefect.export import (
    INPUT_NAME,
    ExportedModel,
    as_uint8_images,
    check_threshold,
    make_serving_fn,
    model_image_shape,
)

DEFAULT_THRESHOLD = 0.5
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
CSV_NAME = "predictions.csv"
OVERLAY_DIR = "overlays"
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


# ---------------------------------------------------------------- predictor
class Predictor:
    """A loaded model: ``predict(images) -> (scores, segmentation maps)``.

    Attributes: ``path``, ``kind`` (``"keras"``, ``"saved_model"`` or
    ``"tflite-float32|float16|int8"``), ``channels`` and ``threshold`` (the
    stored decision threshold, see the module docstring).

    Example:
    >>> from kdefect.export import export_tflite
    >>> from kdefect.model import SegDecNet
    >>> path = export_tflite(SegDecNet(input_shape=(128, 64, 1)), "/tmp/kd.tflite", "float16")
    >>> predictor = load_predictor(path)
    >>> scores, maps = predictor.predict([np.zeros((100, 40), np.uint8)])
    >>> scores.shape, maps[0].shape
    ((1,), (100, 40))
    """

    def __init__(self, path, kind, channels, run, threshold=None):
        self.path = Path(path)
        self.kind = kind
        self.channels = channels
        self._run = run
        self._threshold = threshold
        self.last_labels = None

    @property
    def threshold(self):
        if self._threshold is None:  # exports report it with every prediction
            self.predict([np.zeros((8, 8, self.channels), np.uint8)])
        return self._threshold

    def predict(self, images):
        """Scores (float32, (N,)) and heat-maps (list of (H_i, W_i) float32 in [0, 1]).

        ``images``: a list of uint8 ``(H, W)``/``(H, W, C)`` images of any sizes,
        or a batch array ``(B, H, W)``/``(B, H, W, C)``. A wrong channel count
        raises ``InputError``.

        Example:
        >>> load_predictor("/tmp/kd.tflite").predict(np.zeros((2, 64, 32), np.uint8))[0].shape
        (2,)
        """
        scores, maps, labels = [], [], []
        for image in as_uint8_images(images, self.channels):
            outputs = self._run(image[None])
            scores.append(float(outputs["score"][0]))
            maps.append(np.asarray(outputs["segmentation"][0], np.float32))
            labels.append(bool(outputs["label"][0]))
            self._threshold = float(outputs["threshold"][0])
        # The model's own in-graph decisions at its stored threshold. For int8
        # TFLite they are the authoritative ones: score and threshold are
        # quantised separately, so re-comparing them can flip a borderline case.
        self.last_labels = np.asarray(labels, bool)
        return np.asarray(scores, np.float32), maps

    def decide(self, scores, threshold=None):
        """Decisions ``score >= threshold`` (the stored threshold unless one is given).

        Example:
        >>> load_predictor("/tmp/kd.tflite").decide([0.2, 0.7], threshold=0.5).tolist()
        [False, True]
        """
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        return np.asarray(scores) >= threshold


def keras_threshold(model_path):
    """The threshold for a ``.keras`` file: ``metrics.json`` beside it, else 0.5.

    Example:
    >>> keras_threshold("/nonexistent/model.keras")
    0.5
    """
    metrics = Path(model_path).with_name("metrics.json")
    if not metrics.is_file():
        return DEFAULT_THRESHOLD
    try:
        value = json.loads(metrics.read_text()).get("threshold")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"cannot read the threshold from {metrics}: {err}") from None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DEFAULT_THRESHOLD
    try:
        return check_threshold(value)
    except InputError as err:
        raise InputError(f"{metrics}: {err}") from None


def _keras_predictor(path):
    from kdefect.export import load_keras_model

    model = load_keras_model(path)  # registers SegDecNet; InputError for a bad file
    threshold = keras_threshold(path)
    channels = model_image_shape(model)[2]
    serve = tf.function(
        make_serving_fn(model, threshold),
        input_signature=[tf.TensorSpec((None, None, None, channels), tf.uint8, name=INPUT_NAME)],
    )

    def run(batch):
        return {name: value.numpy() for name, value in serve(tf.constant(batch)).items()}

    return Predictor(path, "keras", channels, run, threshold)


def load_predictor(path):
    """Load a ``.keras`` file, a SavedModel directory or a ``.tflite`` file for prediction.

    The format is recognised from the content (zip = Keras, ``TFL3`` =
    TFLite, directory = SavedModel). Raises ``InputError`` for anything else.

    Example:
    >>> predictor = load_predictor("/tmp/kd.tflite")
    >>> predictor.kind, predictor.channels
    ('tflite-float16', 1)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir():
        exported = ExportedModel(path)
        return Predictor(path, exported.variant, exported.channels, exported)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise InputError(f"cannot read model {path}: {err.strerror}") from None
    if head[:2] == b"PK":
        return _keras_predictor(path)
    if head[4:8] == b"TFL3":
        exported = ExportedModel(path)
        return Predictor(path, exported.variant, exported.channels, exported)
    raise InputError(f"{path} is not a .keras, SavedModel or .tflite model")


# -------------------------------------------------------------------- files
def find_images(inputs):
    """Expand files, folders (their image files, not recursive) and globs into paths.

    A named file must exist (its content is checked when read); a folder or
    glob contributes its files with an image extension and must yield at least
    one. Order is kept, duplicates dropped.

    Example:
    >>> find_images(["/nonexistent/*.png"])
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: no image matches /nonexistent/*.png
    """
    found = []
    for item in inputs:
        item = str(item)
        path = Path(item)
        if path.is_file():
            found.append(path)
            continue
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            what = f"in folder {path}"
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            what = f"matches {item}"
        else:
            raise InputError(f"image {item} does not exist")
        matches = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise InputError(f"no image {what}")
        found.extend(matches)
    if not found:
        raise InputError("no input images given")
    return list(dict.fromkeys(found))


def read_image(path, channels):
    """Decode an image file to uint8 ``(H, W, channels)``; ``InputError`` if it cannot.

    Example:
    >>> read_image("/nonexistent.png", 1)
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: cannot read image /nonexistent.png: No such file or directory
    """
    try:
        with Image.open(path) as img:
            img.load()
            gray = img.mode in _GRAY_MODES
            if gray and img.mode not in ("I", "I;16", "I;16B", "I;16L"):
                img = img.convert("L")
            elif not gray:
                img = img.convert("RGB")
            array = np.asarray(img)
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image file (or it is corrupt)") from None
    except OSError as err:
        raise InputError(f"cannot read image {path}: {err.strerror or err}") from None
    if array.dtype != np.uint8:  # 16-bit / 32-bit integer grayscale
        array = np.round(np.clip(array, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == channels:
        return array
    if channels == 1 and np.all(array == array[..., :1]):
        return array[..., :1]  # grayscale content stored as RGB
    kind = {1: "grayscale", 3: "colour (RGB)"}
    raise InputError(
        f"image {path} is {kind.get(array.shape[-1], array.shape[-1])} but the model expects "
        f"{kind.get(channels, f'{channels} channels')} images; convert it first"
    )


def _jet(values):
    """The 'jet' colour map (blue -> cyan -> yellow -> red) for values in [0, 1]."""
    x = np.clip(values, 0.0, 1.0)[..., None] * 4.0
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue
    return np.clip(1.5 - np.abs(x - centres), 0.0, 1.0)


def overlay_image(image, heatmap, score=None, decision=None):
    """A PIL RGB image: the heat-map blended over the image, score in a banner on top.

    The blend weight grows with the heat (0.6 at 1), so clean areas keep the
    original image. ``image`` is uint8 (H, W[, C]); ``heatmap`` (H, W) in [0, 1].

    Example:
    >>> overlay_image(np.zeros((32, 16), np.uint8), np.ones((32, 16)), 0.9, True).size
    (16, 46)
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    heat = np.asarray(heatmap, np.float32)
    alpha = 0.6 * np.clip(heat, 0.0, 1.0)[..., None]
    blended = rgb * (1.0 - alpha) + 255.0 * _jet(heat) * alpha
    picture = Image.fromarray(np.round(blended).astype(np.uint8), "RGB")
    if score is None:
        return picture
    banner = 14
    canvas = Image.new("RGB", (picture.width, picture.height + banner), (0, 0, 0))
    canvas.paste(picture, (0, banner))
    text = f"{score:.3f}" + ("" if decision is None else (" DEFECT" if decision else " ok"))
    colour = (255, 80, 80) if decision else (255, 255, 255)
    ImageDraw.Draw(canvas).text((2, 1), text, fill=colour)
    return canvas


def _overlay_names(paths):
    """Unique ``<stem>.png`` names (``<stem>_2.png`` ... on clashes)."""
    names, used = [], set()
    for path in paths:
        name, k = f"{path.stem}.png", 1
        while name in used:
            k += 1
            name = f"{path.stem}_{k}.png"
        used.add(name)
        names.append(name)
    return names


def predict_files(model, inputs, output_dir, threshold=None, overlays=True, callback=None):
    """Predict image files; write ``predictions.csv`` and overlay PNGs into ``output_dir``.

    Args:
        model: path of a ``.keras`` / SavedModel / ``.tflite`` model, or a ``Predictor``.
        inputs: files, folders and glob patterns (see ``find_images``).
        output_dir: created if missing. Gets ``predictions.csv`` with the
            columns ``image, score, decision`` (decision 1 = defective) and,
            with ``overlays``, ``overlays/<image stem>.png``.
        threshold: overrides the model's stored threshold (module docstring).
        callback: called with each row as it is done (e.g. to drive a progress bar).

    All inputs are read and checked before anything is written: a missing,
    non-image or wrong-channel file raises ``InputError`` naming it.

    Returns the rows: dicts with ``image``, ``score``, ``decision``,
    ``threshold`` and ``overlay`` (path or None).

    Example:
    >>> Path("/tmp/kd_images").mkdir(exist_ok=True)
    >>> Image.fromarray(np.zeros((100, 40), np.uint8)).save("/tmp/kd_images/a.png")
    >>> rows = predict_files("/tmp/kd.tflite", ["/tmp/kd_images/*.png"], "/tmp/kd_predictions")
    >>> sorted(rows[0])
    ['decision', 'image', 'overlay', 'score', 'threshold']
    """
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    if threshold is not None:
        threshold = check_threshold(threshold)
    paths = find_images(inputs)
    for path in paths:  # validate everything first: nothing is written for bad input
        read_image(path, predictor.channels)
    output_dir = Path(output_dir)
    overlay_dir = output_dir / OVERLAY_DIR
    try:
        (overlay_dir if overlays else output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output directory {output_dir}: {err.strerror or err}") from None
    rows = []
    for path, name in zip(paths, _overlay_names(paths)):
        image = read_image(path, predictor.channels)
        scores, maps = predictor.predict([image])
        used = predictor.threshold if threshold is None else threshold
        decision = bool(predictor.last_labels[0]) if threshold is None else bool(scores[0] >= used)
        row = {"image": str(path), "score": float(scores[0]), "decision": int(decision),
               "threshold": used, "overlay": None}
        if overlays:
            row["overlay"] = str(overlay_dir / name)
            _write(lambda p: overlay_image(image, maps[0], row["score"], decision).save(p, "PNG"),
                   Path(row["overlay"]))
        rows.append(row)
        if callback is not None:
            callback(row)
    _write(lambda p: _write_csv(p, rows), output_dir / CSV_NAME)
    return rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "decision"])
        for row in rows:
            writer.writerow([row["image"], f"{row['score']:.6f}", row["decision"]])


def _write(write_fn, path):
    """Write through a temporary sibling file and rename; ``InputError`` on failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
