"""Severstal Steel (``steel``): ``train_images/<id>.jpg`` + ``train.csv`` run-length masks.

``train.csv`` has the columns ``ImageId,ClassId,EncodedPixels`` (the older
``ImageId_ClassId,EncodedPixels`` form is read too). Runs are
``start length`` pairs with 1-based starts in column-major order on the
256x1600 image. All four defect classes are one "defect" class and, as in the
reference, when an image has several rows the last one wins. ``positives`` P
and ``segmented`` S select ``split_P_S`` (train, test and validation).
Native size 256x1600; at ~1.8 GB of uint8 pixels it streams from disk.
"""

import csv
from functools import partial

import numpy as np

from kdefect.data.datasets import register
from kdefect.data.download import dataset_root
from kdefect.data.records import Record, build_splits
from kdefect.data.splits import steel_split
from kdefect.errors import InputError

REFERENCE_SIZE = (256, 1600)


def rle_decode(rle, height=256, width=1600):
    """Decode a run-length string (1-based starts, column-major) to a uint8 0/1 mask.

    Example:
    >>> rle_decode("1 3 10 2", 4, 3).T.ravel().tolist()
    [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    """
    mask = np.zeros(height * width, np.uint8)
    values = str(rle).split()
    if len(values) % 2:
        raise InputError(f"run-length string has an odd number of values: {rle[:40]!r}...")
    try:
        runs = np.asarray(values, dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise InputError(f"run-length string is not made of integers: {rle[:40]!r}") from None
    for start, length in runs:
        if start < 1 or length < 0 or start - 1 + length > mask.size:
            raise InputError(f"run {start} {length} lies outside a {height}x{width} image")
        mask[start - 1 : start - 1 + length] = 1
    return mask.reshape((width, height)).T


def rle_encode(mask):
    """Encode a 2-D mask (defect = > 0) as a run-length string (1-based, column-major).

    Example:
    >>> m = np.zeros((4, 3), np.uint8); m[0:3, 0] = 1; m[0:2, 2] = 1
    >>> rle_encode(m)
    '1 3 9 2'
    """
    flat = np.concatenate([[0], (np.asarray(mask).T.ravel() > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def read_annotations(path):
    """``{image_id (no extension): rle}`` from ``train.csv``; the last row of an image wins.

    Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
    >>> _ = p.write_text("ImageId,ClassId,EncodedPixels\\na.jpg,1,1 2\\na.jpg,3,5 1\\n")
    >>> read_annotations(p)
    {'a': '5 1'}
    """
    annotations = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            for row in reader:
                if "ImageId" in fields:
                    image = row["ImageId"]
                elif "ImageId_ClassId" in fields:
                    image = row["ImageId_ClassId"].rsplit("_", 1)[0]
                else:
                    raise InputError(
                        f"{path} has columns {fields}; expected ImageId,ClassId,EncodedPixels"
                    )
                rle = (row.get("EncodedPixels") or "").strip()
                if rle:
                    annotations[image.rsplit(".", 1)[0]] = rle
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"cannot read annotations {path}: {err}") from None
    return annotations


def _records(root, entries, annotations):
    records = []
    for image_id, flag in entries:
        image = root / "train_images" / f"{image_id}.jpg"
        rle = annotations.get(str(image_id))
        mask = None if rle is None else partial(rle_decode, rle, *REFERENCE_SIZE)
        records.append(Record(str(image_id), image, mask, rle is not None, flag))
    return records


@register("steel")
def load_steel(config):
    """Severstal ``DataSplits`` (train, test, validation) of ``split_{positives}_{segmented}``.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> try:
    ...     load_steel(TrainConfig(dataset="steel", positives=7, data_dir="."))
    ... except InputError as err:
    ...     print(str(err)[:50])
    steel has no split 'split_7_7'; available: split_1
    """
    if config.fold != 0:
        raise InputError(f"steel has a single split; fold must be 0, got {config.fold}")
    train, test, validation = steel_split(config.positives, config.segmented, config.extra.get("split_file"))
    root = dataset_root("steel", config.resolved_data_dir())
    annotations = read_annotations(root / "train.csv")
    images = root / "train_images"
    for image_id in annotations:
        if not (images / f"{image_id}.jpg").is_file():
            raise InputError(f"train.csv has a mask for {image_id}.jpg but {images} has no such image")
    parts = {
        "train": _records(root, train, annotations),
        "test": _records(root, test, annotations),
        "validation": _records(root, validation, annotations),
    }
    return build_splits(config, parts, REFERENCE_SIZE)
