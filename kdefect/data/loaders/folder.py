"""Your own images (``folder``): a documented layout filled without writing code.

::

    my_data/
      images/        any image files (png, jpg, bmp, tif, ...), any size
      masks/         optional: a mask per defective image, same file stem
      labels.csv     optional: image-level labels, columns ``image,label``

or the same three entries inside ``train/`` and ``test/`` (and optionally
``val/``) sub-folders. Without sub-folders a seeded split puts
``test_fraction`` of the positives and of the negatives in the test set.

An image is defective when its mask has a pixel > 0, or when ``labels.csv``
says ``1`` (then, without a mask, it trains on the image label only: mixed
supervision). A missing or all-zero mask and no label (or label ``0``) means
defect-free. Images are resized to ``input_size`` (default 256x256), gray or
colour per ``channels``. See ``docs/DATA.md``.
"""

import csv
from pathlib import Path

import numpy as np

from kdefect.data.datasets import register
from kdefect.data.download import dataset_root
from kdefect.data.imageio import list_images
from kdefect.data.records import Record, build_splits
from kdefect.errors import InputError

REFERENCE_SIZE = (256, 256)
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")
VALIDATION_NAMES = ("val", "validation")


def _by_stem(files, what):
    table = {}
    for path in files:
        if path.stem in table:
            raise InputError(f"two {what} share the name {path.stem!r}: {table[path.stem].name} and {path.name}")
        table[path.stem] = path
    return table


def read_labels(path):
    """``{image stem: bool}`` from a ``labels.csv`` with columns ``image,label`` (1/0, true/false, yes/no).

    Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = p.write_text("image,label\\na.png,1\\nb,0\\n")
    >>> read_labels(p)
    {'a': True, 'b': False}
    """
    labels = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"image", "label"} <= set(reader.fieldnames or []):
                raise InputError(f"{path} must have a header with the columns image,label; got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                value = (row["label"] or "").strip().lower()
                if value not in TRUE + FALSE:
                    raise InputError(f"{path} line {line}: label {row['label']!r} is not one of 1/0, true/false, yes/no")
                labels[Path((row["image"] or "").strip()).stem] = value in TRUE
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"cannot read labels {path}: {err}") from None
    return labels


def folder_records(folder):
    """``Record``s of one folder holding ``images/`` (+ optional ``masks/``, ``labels.csv``).

    Raises ``InputError`` for a missing or empty ``images/``, a mask or a
    label without its image, and a label ``0`` on an image whose mask shows
    a defect (found when the mask is decoded).

    Example:
    >>> import tempfile; from PIL import Image
    >>> d = Path(tempfile.mkdtemp()); (d / "images").mkdir()
    >>> Image.new("L", (9, 7)).save(d / "images/a.png")
    >>> _ = (d / "labels.csv").write_text("image,label\\na.png,1\\n")
    >>> r = folder_records(d)[0]
    >>> r.name, r.is_positive, r.mask
    ('a', True, None)
    """
    folder = Path(folder)
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise InputError(f"folder dataset {folder} has no images/ folder")
    images = _by_stem(list_images(images_dir), f"images in {images_dir}")
    if not images:
        raise InputError(f"folder {images_dir} holds no images (png, jpg, bmp, tif, gif)")
    masks_dir = folder / "masks"
    masks = _by_stem(list_images(masks_dir), f"masks in {masks_dir}") if masks_dir.is_dir() else {}
    for stem, mask in masks.items():
        if stem not in images:
            raise InputError(f"mask {mask} has no image with the stem {stem!r} in {images_dir}")
    labels_file = folder / "labels.csv"
    labels = read_labels(labels_file) if labels_file.is_file() else {}
    for stem in labels:
        if stem not in images:
            raise InputError(f"{labels_file} labels {stem!r}, which is not an image in {images_dir}")
    records = []
    for stem, image in images.items():
        # A label 1 without a (non-empty) mask trains on the image label only (see records).
        records.append(Record(stem, image, masks.get(stem), is_positive=labels.get(stem)))
    return records


def _check_labels(samples, records):
    """A label 0 on an image whose mask shows a defect is a contradiction."""
    for i, record in enumerate(records):
        if record.is_positive is False and samples.seg_target[i].max() > 0:
            raise InputError(
                f"labels.csv says {record.name} is defect-free (0) but its mask {record.mask} shows a defect"
            )


def _seeded_split(records, test_fraction, seed):
    """Stratified by the known image-level label (mask present or label 1)."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    likely_positive = np.array([r.mask is not None if r.is_positive is None else r.is_positive for r in records])
    train, test = [], []
    for group in (np.flatnonzero(likely_positive), np.flatnonzero(~likely_positive)):
        order = rng.permutation(group)
        n_test = int(round(len(order) * test_fraction))
        test += sorted(order[:n_test].tolist())
        train += sorted(order[n_test:].tolist())
    return [records[i] for i in sorted(train)], [records[i] for i in sorted(test)]


@register("folder")
def load_folder(config):
    """``DataSplits`` of a folder dataset at ``config.data_dir`` (or ``$KDEFECT_DATA_DIR``).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> load_folder(TrainConfig(dataset="folder", data_dir="/nonexistent"))
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: data directory /nonexistent does not exist
    """
    if config.resolved_data_dir() is None:
        raise InputError("the folder dataset needs data_dir (or KDEFECT_DATA_DIR) pointing at your images")
    root = dataset_root("folder", config.resolved_data_dir())
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {"train": folder_records(root / "train"), "test": folder_records(root / "test")}
        for name in VALIDATION_NAMES:
            if (root / name).is_dir():
                parts["validation"] = folder_records(root / name)
                break
    else:
        train, test = _seeded_split(folder_records(root), config.test_fraction, config.seed)
        parts = {"train": train, "test": test}
    splits = build_splits(config, parts, REFERENCE_SIZE)
    for part, records in parts.items():
        _check_labels(getattr(splits, part), records)
    return splits
