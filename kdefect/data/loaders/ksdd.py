"""KolektorSDD (``ksdd``): ``kosNN/PartK.jpg`` + ``PartK_label.bmp``, the paper's 3-fold splits.

Reference input size 1408x512 (HxW), scaled by ``config.scale`` (0.5 ->
704x256) unless ``config.input_size`` is given. ``positives`` N selects
``split_N_N``, ``segmented`` M ``split_33_M`` (mixed supervision: positives
of folders flagged not fully labelled train on the image label only).
``kos21_Part7`` is skipped as in the reference.
"""

import re

from kdefect.data.datasets import register
from kdefect.data.download import dataset_root
from kdefect.data.imageio import IMAGE_SUFFIXES
from kdefect.data.records import Record, build_splits
from kdefect.data.splits import ksdd_split
from kdefect.errors import InputError

REFERENCE_SIZE = (1408, 512)
SKIPPED = {"kos21_Part7"}


def folder_records(root, folder, fully_labeled=True):
    """The ``Record``s of one KSDD item folder, sorted by part number.

    Raises ``InputError`` for a missing folder, an image without its
    ``_label.bmp`` or a label without its image.

    Example:
    >>> import tempfile; from pathlib import Path; from PIL import Image
    >>> d = Path(tempfile.mkdtemp()); (d / "kos01").mkdir()
    >>> Image.new("L", (8, 8)).save(d / "kos01/Part0.jpg")
    >>> Image.new("L", (8, 8)).save(d / "kos01/Part0_label.bmp")
    >>> [r.name for r in folder_records(d, "kos01")]
    ['kos01_Part0']
    """
    path = root / folder
    if not path.is_dir():
        raise InputError(f"KSDD item folder {path} (listed in the split) does not exist")
    files = {p.name: p for p in path.iterdir() if p.is_file()}
    parts = sorted(
        (p for p in files.values() if re.fullmatch(r"Part\d+", p.stem) and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: int(p.stem[4:]),
    )
    stems = {p.stem for p in parts}
    for name in files:
        match = re.fullmatch(r"(Part\d+)_label\.\w+", name)
        if match and match.group(1) not in stems:
            raise InputError(f"mask {path / name} has no image {match.group(1)}.jpg beside it")
    records = []
    for image in parts:
        name = f"{folder}_{image.stem}"
        if name in SKIPPED:
            continue
        mask = path / f"{image.stem}_label.bmp"
        if not mask.is_file():
            raise InputError(f"image {image} has no mask {mask.name} beside it (KSDD masks are BMP files)")
        records.append(Record(name, image, mask, is_segmented=fully_labeled))
    if not records:
        raise InputError(f"KSDD item folder {path} holds no PartK.jpg images")
    return records


@register("ksdd")
def load_ksdd(config):
    """KSDD ``DataSplits`` (train, test) of ``config.fold`` (0-2).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> load_ksdd(TrainConfig(dataset="ksdd", fold=5, data_dir="."))
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: ksdd has no fold 5; expected one of 0, 1, 2
    """
    train, test = ksdd_split(config.positives, config.segmented, config.fold,
                             config.extra.get("split_file"))
    root = dataset_root("ksdd", config.resolved_data_dir())

    def records(entries):
        return [r for folder, flag in entries for r in folder_records(root, folder, flag)]

    return build_splits(config, {"train": records(train), "test": records(test)}, REFERENCE_SIZE)
