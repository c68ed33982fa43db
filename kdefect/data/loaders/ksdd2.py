"""KolektorSDD2 (``ksdd2``): ``{train,test}/<id>.png`` + ``<id>_GT.png``, colour.

Reference input size 640x232 (HxW) with 3 channels (``configs/ksdd2.yaml``;
kdefect keeps RGB order, the reference reads BGR). ``segmented`` S selects
``split_S`` (0, 16, 53, 126, 246 = all): S of the 246 training positives
keep their masks. A positive is an image whose ``_GT`` mask is not empty.
"""

from kdefect.data.datasets import register
from kdefect.data.download import dataset_root
from kdefect.data.records import Record, build_splits
from kdefect.data.splits import ksdd2_split
from kdefect.errors import InputError

REFERENCE_SIZE = (640, 232)


def part_records(folder, entries):
    """``Record``s of the ``train`` or ``test`` folder for split ``entries`` of ``(id, flag)``.

    Raises ``InputError`` for a missing image or mask, and for a ``_GT`` mask
    whose image is missing.

    Example:
    >>> import tempfile; from pathlib import Path; from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in ("10001.png", "10001_GT.png"): Image.new("L", (8, 8)).save(d / n)
    >>> [r.name for r in part_records(d, [(10001, True)])]
    ['10001']
    """
    if not folder.is_dir():
        raise InputError(f"KSDD2 folder {folder} does not exist")
    for mask in folder.glob("*_GT.png"):
        image = folder / f"{mask.name[: -len('_GT.png')]}.png"
        if not image.is_file():
            raise InputError(f"mask {mask} has no image {image.name} in {folder}")
    records = []
    for image_id, flag in entries:
        image, mask = folder / f"{image_id}.png", folder / f"{image_id}_GT.png"
        if not image.is_file():
            raise InputError(f"KSDD2 image {image} (listed in the split) does not exist")
        if not mask.is_file():
            raise InputError(f"KSDD2 image {image} has no mask {mask.name} beside it")
        records.append(Record(str(image_id), image, mask, is_segmented=flag))
    return records


@register("ksdd2")
def load_ksdd2(config):
    """KSDD2 ``DataSplits`` (train, test) of ``split_{segmented}``.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> load_ksdd2(TrainConfig(dataset="ksdd2", segmented=3, data_dir="."))
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: ksdd2 has no split 'split_3'; available: split_0, split_126, split_16, split_246, split_53
    """
    if config.positives is not None:
        raise InputError(
            f"ksdd2 has no 'positives' option (got {config.positives}); its splits vary 'segmented' "
            "(0, 16, 53, 126, 246)"
        )
    if config.fold != 0:
        raise InputError(f"ksdd2 has a single split; fold must be 0, got {config.fold}")
    train, test = ksdd2_split(config.segmented, config.extra.get("split_file"))
    root = dataset_root("ksdd2", config.resolved_data_dir())
    parts = {"train": part_records(root / "train", train), "test": part_records(root / "test", test)}
    return build_splits(config, parts, REFERENCE_SIZE)
