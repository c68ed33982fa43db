"""DAGM 2007 (``dagm``): ``ClassN/{Train,Test}/NNNN.PNG`` + ``Label/NNNN_label.PNG``.

The Kaggle layout of the dataset. ``config.fold`` is the class id 1-10; an
image is defective when its label file exists (as in the reference).
``segmented`` S selects ``split_S`` (0, 5, 15, 45 or 1000 = all masks).
Reference input size 512x512.
"""

from pathlib import Path

from kdefect.data.datasets import register
from kdefect.data.download import dataset_root
from kdefect.data.imageio import IMAGE_SUFFIXES
from kdefect.data.records import Record, build_splits
from kdefect.data.splits import dagm_split
from kdefect.errors import InputError

REFERENCE_SIZE = (512, 512)


def label_path(folder, image_name):
    """The label file of ``image_name`` in a ``Train``/``Test`` folder.

    Example:
    >>> label_path(Path("Class1/Train"), "0576.PNG").as_posix()
    'Class1/Train/Label/0576_label.PNG'
    """
    stem = Path(image_name).stem
    return Path(folder) / "Label" / f"{stem}_label.PNG"


def part_records(folder, entries):
    """``Record``s of one ``ClassN/Train`` or ``ClassN/Test`` folder for split ``entries``.

    Raises ``InputError`` for a missing folder or image and for a label file
    whose image is missing.

    Example:
    >>> import tempfile; from PIL import Image
    >>> d = Path(tempfile.mkdtemp()); Image.new("L", (8, 8)).save(d / "0001.PNG")
    >>> r = part_records(d, [("0001.PNG", True)])[0]
    >>> r.name, r.is_positive
    ('0001', False)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DAGM folder {folder} does not exist")
    labels = folder / "Label"
    if labels.is_dir():
        for mask in labels.iterdir():
            if mask.suffix.lower() in IMAGE_SUFFIXES and mask.stem.endswith("_label"):
                image = folder / f"{mask.stem[: -len('_label')]}{mask.suffix}"
                if not image.is_file():
                    raise InputError(f"mask {mask} has no image {image.name} in {folder}")
    records = []
    for name, flag in entries:
        image = folder / name
        if not image.is_file():
            raise InputError(f"DAGM image {image} (listed in the split) does not exist")
        mask = label_path(folder, name)
        positive = mask.is_file()
        records.append(Record(Path(name).stem, image, mask if positive else None, positive, flag))
    return records


@register("dagm")
def load_dagm(config):
    """DAGM ``DataSplits`` (train, test) of class ``config.fold`` (1-10).

    Example:
    >>> from kdefect.config import TrainConfig
    >>> load_dagm(TrainConfig(dataset="dagm", fold=0, data_dir="."))
    Traceback (most recent call last):
    ...
    kdefect.errors.InputError: dagm has no fold (class) 0; expected one of 1..10
    """
    if config.positives is not None:
        raise InputError(
            f"dagm has no 'positives' option (got {config.positives}); its splits vary 'segmented' "
            "(0, 5, 15, 45, 1000)"
        )
    train, test = dagm_split(config.segmented, config.fold, config.extra.get("split_file"))
    root = dataset_root("dagm", config.resolved_data_dir())
    cls = root / f"Class{config.fold}"
    parts = {"train": part_records(cls / "Train", train), "test": part_records(cls / "Test", test)}
    return build_splits(config, parts, REFERENCE_SIZE)
