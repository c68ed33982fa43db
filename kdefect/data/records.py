"""From file records to ``SampleSet``s: decode, check, resize and precompute labels once.

Every file-based loader lists its samples as ``Record``s (image file, mask
source, flags) and calls ``build_splits``. Images are decoded and resized
bilinearly to the input size into uint8 RAM, or, when the whole dataset
would exceed ``pipeline.IN_MEMORY_LIMIT_BYTES`` (or ``in_memory=False``),
only checked and left on disk for the ``tf.data`` pipeline to stream. Masks
are always read once here and turned into 1/8 targets (``labels.prepare_label``).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdefect.data.datasets import DataSplits, label_config
from kdefect.data.imageio import STREAMABLE_SUFFIXES, image_size, read_image, read_mask, to_input
from kdefect.data.labels import prepare_label
from kdefect.data.pipeline import IN_MEMORY_LIMIT_BYTES
from kdefect.data.samples import SampleSet
from kdefect.errors import InputError


@dataclass(frozen=True)
class Record:
    """One sample as files: where its image and mask come from, and its flags.

    Args:
        name: sample name (unique within a split), e.g. ``kos21_Part5``.
        image_path: the image file.
        mask: None (defect-free), a mask file path, or a callable returning a
            2-D array at the image's size (e.g. a decoded RLE).
        is_positive: image-level label; None means "the mask has a pixel > 0".
        is_segmented: whether the mask of a positive is used for the
            segmentation loss (negatives always are: their empty mask is a
            complete label, as in the reference; positives without any mask
            pixel never are: they train on the image label only).

    Example:
    >>> Record("a", "a.png").is_segmented
    True
    """

    name: str
    image_path: Path
    mask: object = None
    is_positive: bool = None
    is_segmented: bool = True

    def mask_path(self):
        """The mask file, or None when the mask is absent or computed."""
        return None if self.mask is None or callable(self.mask) else Path(self.mask)


def resolve_input_size(config, reference):
    """The (H, W) input size: ``config.input_size``, else ``reference`` times ``config.scale``.

    Raises ``InputError`` when the scaled size is not a whole multiple of 8.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> resolve_input_size(TrainConfig(input_size=None, scale=0.5), (1408, 512))
    (704, 256)
    """
    if config.input_size is not None:
        return tuple(int(v) for v in config.input_size)
    size = [v * config.scale for v in reference]
    if any(abs(v - round(v)) > 1e-6 or round(v) % 8 or round(v) <= 0 for v in size):
        shown = "x".join(f"{v:g}" for v in size)
        raise InputError(
            f"scale {config.scale:g} gives an input size of {shown} (HxW) from the reference "
            f"{reference[0]}x{reference[1]}; both sides must be whole multiples of 8 "
            "(pick another scale or set input_size)"
        )
    return tuple(int(round(v)) for v in size)


def choose_in_memory(num_samples, input_shape, override=None):
    """Keep images in RAM unless they would exceed ``IN_MEMORY_LIMIT_BYTES``; ``override`` wins.

    Example:
    >>> choose_in_memory(399, (1408, 512, 1)), choose_in_memory(12568, (256, 1600, 1))
    (True, False)
    """
    if override is not None:
        return bool(override)
    height, width, channels = input_shape
    return num_samples * height * width * channels <= IN_MEMORY_LIMIT_BYTES


def load_mask(record):
    """The 2-D mask of a ``Record`` at its original size (None for a defect-free record).

    Colour masks are flattened with a maximum over their channels.

    Example:
    >>> load_mask(Record("a", "a.png")) is None
    True
    >>> load_mask(Record("b", "b.png", lambda: np.ones((2, 3, 3), np.uint8))).shape
    (2, 3)
    """
    if record.mask is None:
        return None
    mask = np.asarray(record.mask()) if callable(record.mask) else np.asarray(read_mask(record.mask))
    return mask.max(axis=-1) if mask.ndim == 3 else mask


def _process(record, input_shape, labels, in_memory):
    """Decode and check one record -> (uint8 image or None, target, weight, positive, has_mask)."""
    height, width, channels = input_shape
    if in_memory:
        image = read_image(record.image_path, channels)
        original = image.shape[:2]
        image = to_input(image, height, width)
    else:
        if Path(record.image_path).suffix.lower() not in STREAMABLE_SUFFIXES:
            raise InputError(
                f"image {record.image_path} cannot be streamed from disk (supported: "
                f"{', '.join(STREAMABLE_SUFFIXES)}); convert it or set in_memory to true"
            )
        image, original = None, image_size(record.image_path)
    mask = load_mask(record)
    if mask is not None:
        if mask.shape != tuple(original):
            source = record.mask_path() or "its mask"
            raise InputError(
                f"mask {source} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                f"{record.image_path} is {original[0]}x{original[1]}; they must be the same size"
            )
        if not mask.any():
            mask = None
    target, weight = prepare_label(mask, height, width, labels)
    positive = mask is not None if record.is_positive is None else bool(record.is_positive)
    return image, target, weight, positive, mask is not None


def build_sample_set(records, input_shape, labels, in_memory=True, workers=None):
    """Decode ``records`` into a ``SampleSet`` at ``input_shape`` (H, W, C).

    Images are decoded and resized in a thread pool (``workers``, default the
    CPU count). With ``in_memory=False`` images are only checked (header) and
    their paths kept for streaming.

    Example:
    >>> import tempfile, os
    >>> from PIL import Image
    >>> from kdefect.data.labels import LabelConfig
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.png"); Image.new("L", (40, 24)).save(p)
    >>> s = build_sample_set([Record("a", p)], (16, 32, 1), LabelConfig())
    >>> s.images.shape, s.num_positives
    ((1, 16, 32, 1), 0)
    """
    records = list(records)
    height, width, channels = input_shape
    n = len(records)
    images = np.empty((n, height, width, channels), np.uint8) if in_memory else None
    seg_target = np.empty((n, height // 8, width // 8), np.float32)
    seg_weight = np.empty_like(seg_target)
    positive = np.empty(n, bool)
    has_mask = np.empty(n, bool)

    def work(i):
        image, seg_target[i], seg_weight[i], positive[i], has_mask[i] = _process(
            records[i], input_shape, labels, in_memory
        )
        if in_memory:
            images[i] = image

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for _ in pool.map(work, range(n)):
            pass
    return SampleSet(
        names=[r.name for r in records],
        input_shape=tuple(input_shape),
        seg_target=seg_target,
        seg_weight=seg_weight,
        is_positive=positive,
        is_segmented=(np.array([bool(r.is_segmented) for r in records], bool) & has_mask) | ~positive,
        images=images,
        image_paths=[Path(r.image_path) for r in records],
        mask_paths=[r.mask_path() for r in records],
    )


def build_splits(config, parts, reference_size):
    """Build the ``DataSplits`` of a run from ``{"train": records, "test": records, ...}``.

    The input size comes from ``resolve_input_size(config, reference_size)``
    and ``config.channels``; whether images live in RAM is decided once for
    all parts together (``choose_in_memory`` with ``config.in_memory``).

    Example:
    >>> import tempfile, os
    >>> from PIL import Image
    >>> from kdefect.config import TrainConfig
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.png"); Image.new("L", (8, 8)).save(p)
    >>> s = build_splits(TrainConfig(input_size=(8, 8)), {"train": [Record("a", p)],
    ...                  "test": [Record("b", p)]}, (8, 8))
    >>> len(s.train), len(s.test), s.validation
    (1, 1, None)
    """
    height, width = resolve_input_size(config, reference_size)
    input_shape = (height, width, int(config.channels))
    for part, records in parts.items():
        if records is not None and not records:
            raise InputError(f"the {part} split of dataset {config.dataset!r} has no images")
    total = sum(len(r) for r in parts.values() if r)
    in_memory = choose_in_memory(total, input_shape, config.in_memory)
    labels = label_config(config)
    built = {
        part: build_sample_set(records, input_shape, labels, in_memory)
        for part, records in parts.items()
        if records is not None
    }
    return DataSplits(train=built["train"], test=built["test"], validation=built.get("validation"))
