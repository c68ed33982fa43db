"""The paper's published train/test splits, shipped as package data (``kdefect/data/splits/``).

Files (CC BY-NC-SA 4.0, ViCoS; see ``splits/ATTRIBUTION.md``) map a split
name to its parts; every entry is ``(item, is_fully_labeled)``:

- ``ksdd``: ``split_{P}_{S}`` -> [train per fold (3), test per fold (3)], items ``kosNN`` folders
- ``dagm``: ``split_{S}`` -> [train per class (10), test per class (10)], items image file names
- ``ksdd2``: ``split_{S}`` -> [train, test], items integer image ids
- ``steel``: ``split_{P}_{S}`` -> [train, test, validation], items image ids

P is the number of positive training samples and S how many of them keep
their pixel masks (mixed supervision). A split file of the same format can
replace the packaged one (``config.extra["split_file"]``).
"""

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from kdefect.errors import InputError

FILES = {"ksdd": "ksdd.json", "dagm": "dagm.json.gz", "ksdd2": "ksdd2.json.gz", "steel": "steel.json.gz"}


def _read(path_or_traversable, name):
    raw = path_or_traversable.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return json.loads(raw)


@lru_cache(maxsize=8)
def _load(dataset, path):
    if path is None:
        name = FILES[dataset]
        data = _read(resources.files("kdefect.data").joinpath("splits").joinpath(name), name)
    else:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"split file {path} does not exist")
        try:
            data = _read(path, path.name)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read split file {path}: {err} (expected JSON, optionally gzipped)") from None
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, dict):
        raise InputError(f"split file {path or FILES[dataset]} has no 'splits' mapping")
    return splits


def available(dataset, split_file=None):
    """The split names a dataset's split file has, sorted.

    Example:
    >>> available("ksdd2")
    ['split_0', 'split_126', 'split_16', 'split_246', 'split_53']
    """
    if dataset not in FILES:
        raise InputError(f"dataset {dataset!r} has no published splits; expected one of {', '.join(FILES)}")
    return sorted(_load(dataset, None if split_file is None else str(split_file)))


def get_split(dataset, key, split_file=None):
    """The parts of split ``key`` as lists of ``(item, is_fully_labeled)`` tuples.

    Raises ``InputError`` naming the key and the available ones.

    Example:
    >>> train, test = get_split("ksdd2", "split_246")
    >>> len(train), len(test)
    (2331, 1004)
    """
    splits = _load(dataset, None if split_file is None else str(split_file))
    if key not in splits:
        raise InputError(
            f"{dataset} has no split {key!r}; available: {', '.join(sorted(splits))}"
        )

    def entries(part):
        return [(item, bool(flag)) for item, flag in part]

    parts = splits[key]
    if dataset in ("ksdd", "dagm"):
        return [[entries(group) for group in part] for part in parts]
    return [entries(part) for part in parts]


def ksdd_split(positives=None, segmented=None, fold=0, split_file=None):
    """KSDD ``(train, test)`` folder lists of ``fold`` (0-2) for ``split_{P}_{S}``.

    ``positives`` P (33, 25, 20, 15, 10, 5; default 33) and ``segmented`` S
    (default P; with P=33 also 0, 5, 10, 15, 20).

    Example:
    >>> train, test = ksdd_split(33, 33, 0)
    >>> len(train), len(test), train[0][1]
    (33, 17, True)
    """
    pos = 33 if positives is None else positives
    seg = pos if segmented is None else segmented
    parts = get_split("ksdd", f"split_{pos}_{seg}", split_file)
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < len(parts[0]):
        raise InputError(f"ksdd has no fold {fold!r}; expected one of 0, 1, 2")
    return tuple(part[fold] for part in parts)


def dagm_split(segmented=None, class_id=1, split_file=None):
    """DAGM ``(train, test)`` image-name lists of class ``class_id`` (1-10) for ``split_{S}``.

    ``segmented`` S in 0, 5, 15, 45, 1000 (default 1000 = all masks).

    Example:
    >>> train, test = dagm_split(1000, 1)
    >>> len(train), len(test)
    (575, 575)
    """
    seg = 1000 if segmented is None else segmented
    parts = get_split("dagm", f"split_{seg}", split_file)
    valid = isinstance(class_id, int) and not isinstance(class_id, bool) and 1 <= class_id <= len(parts[0])
    if not valid:
        raise InputError(f"dagm has no fold (class) {class_id!r}; expected one of 1..{len(parts[0])}")
    return tuple(part[class_id - 1] for part in parts)


def ksdd2_split(segmented=None, split_file=None):
    """KSDD2 ``(train, test)`` image-id lists for ``split_{S}`` (S in 0, 16, 53, 126, 246; default 246).

    Example:
    >>> train, test = ksdd2_split(0)
    >>> len(train), sum(flag for _, flag in train)
    (2331, 2085)
    """
    seg = 246 if segmented is None else segmented
    return tuple(get_split("ksdd2", f"split_{seg}", split_file))


def steel_split(positives=None, segmented=None, split_file=None):
    """Severstal ``(train, test, validation)`` image-id lists for ``split_{P}_{S}``.

    P in 300, 750, 1000 (ICPR, default), 1500, 3000; S default P.

    Example:
    >>> train, test, val = steel_split(1000, 1000)
    >>> len(train), len(test), len(val)
    (2000, 2000, 500)
    """
    pos = 1000 if positives is None else positives
    seg = pos if segmented is None else segmented
    return tuple(get_split("steel", f"split_{pos}_{seg}", split_file))
