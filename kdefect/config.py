"""Typed run configuration, loaded from YAML (``configs/*.yaml``) and merged with overrides.

Example:
>>> cfg = TrainConfig(dataset="synthetic", epochs=3)
>>> cfg.replace(lr=0.1).lr
0.1
"""

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from kdefect.data.labels import ANNOTATIONS
from kdefect.errors import InputError

DATASETS = ("synthetic", "ksdd", "dagm", "steel", "ksdd2", "folder")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")  # see kdefect.distribute


def _config_dir():
    # Installed: package data kdefect/configs; source checkout / editable: the repository's configs/.
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "synthetic.yaml").exists():
            return candidate
    return here / "configs"


CONFIG_DIR = _config_dir()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (one fold).

    The defaults are the built-in synthetic run; ``configs/<dataset>.yaml``
    holds the paper's settings for each dataset.

    Attributes (grouped):
        data: ``dataset``, ``data_dir`` (None: ``KDEFECT_DATA_DIR`` or the
            download cache), ``positives``/``segmented`` (the paper's split),
            ``fold``, ``input_size`` ([H, W]) or ``scale`` (of the dataset's
            reference size), ``channels``, ``dilate``, ``annotation``
            (``mask``, or ``boxes``: each defect replaced by its rotated
            bounding box, approximating the KSDD "boxes" variant the paper
            used; see ``kdefect.data.labels.LabelConfig``), ``num_samples`` and
            ``test_fraction`` (synthetic/folder), ``in_memory`` (None: keep
            images in RAM unless they exceed ~1 GB, else stream from disk;
            True/False force it).
        loss: ``delta`` (δ), ``dyn_balance``, ``grad_adjust``, ``weighted``
            with ``weight_p``/``weight_max``/``weight_norm``, ``cls_target``
            (``max_soft`` or ``binary``), ``loss_reduction`` (``sum``).
        optimisation: ``epochs``, ``lr`` (plain SGD), ``batch_size``,
            ``freq_sampling``, ``seed``, ``precision`` (``auto`` picks
            mixed_bfloat16/mixed_float16 where the hardware has it),
            ``jit_compile`` (XLA; None = Keras's ``auto``: on for GPUs, off
            for CPUs, where it was measured slower, see docs/PERFORMANCE.md),
            ``strategy`` (``auto``, ``none``, ``mirrored``, ``multi-worker``:
            the ``tf.distribute`` strategy; ``batch_size`` is the global batch,
            split across the replicas; see ``kdefect.distribute``).
        evaluation: ``validate_every`` (epochs; 0 = only at the end),
            ``use_best`` (evaluate the best-validation model instead of the final).

    Example:
    >>> TrainConfig(dataset="ksdd", positives=10).positives
    10
    >>> TrainConfig(input_size=(100, 64))
    Traceback (most recent call last):
    kdefect.errors.InputError: input size 100x64 (HxW) must be two positive numbers divisible by 8
    """

    dataset: str = "synthetic"
    data_dir: str = None
    positives: int = None
    segmented: int = None
    fold: int = 0
    input_size: tuple = None
    scale: float = 1.0
    channels: int = 1
    dilate: int = 5
    annotation: str = "mask"
    num_samples: int = 240
    test_fraction: float = 0.5
    in_memory: bool = None
    epochs: int = 10
    lr: float = 0.05
    delta: float = 1.0
    batch_size: int = 2
    dyn_balance: bool = True
    grad_adjust: bool = True
    freq_sampling: bool = True
    weighted: bool = True
    weight_p: float = 2.0
    weight_max: float = 1.0
    weight_norm: str = "global"
    cls_target: str = "max_soft"
    loss_reduction: str = "sum"
    first_block_convs: int = 1
    seed: int = 1337
    precision: str = "float32"
    jit_compile: bool = None
    strategy: str = "auto"
    validate_every: int = 0
    use_best: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise InputError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.annotation not in ANNOTATIONS:
            raise InputError(f"unknown annotation {self.annotation!r}; expected one of {', '.join(ANNOTATIONS)}")
        for name in ("epochs", "batch_size", "dilate"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr!r}")
        if self.input_size is not None:
            size = tuple(int(v) for v in self.input_size)
            if len(size) != 2 or any(v <= 0 or v % 8 for v in size):
                raise InputError(
                    f"input size {'x'.join(map(str, size))} (HxW) must be two positive numbers divisible by 8"
                )
            object.__setattr__(self, "input_size", size)
        if not 0 < self.scale <= 4:
            raise InputError(f"scale must be in (0, 4], got {self.scale!r}")

    def replace(self, **changes):
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self):
        """Plain-data view (for YAML/JSON)."""
        out = dataclasses.asdict(self)
        if out["input_size"] is not None:
            out["input_size"] = list(out["input_size"])
        return out

    def resolved_data_dir(self):
        """``data_dir``, else ``$KDEFECT_DATA_DIR``, else None (download to the cache)."""
        return self.data_dir or os.environ.get("KDEFECT_DATA_DIR") or None


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _check_types(values, source):
    for key, value in values.items():
        if key not in _FIELD_TYPES:
            raise InputError(f"{source}: unknown key {key!r}")
        kind = _FIELD_TYPES[key]
        if value is None:
            continue
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "tuple": isinstance(value, (list, tuple)),
            "dict": isinstance(value, dict),
        }[kind if isinstance(kind, str) else kind.__name__]
        if not ok:
            raise InputError(f"{source}: {key} must be of type {kind if isinstance(kind, str) else kind.__name__}, "
                             f"got {value!r}")


def read_yaml(path):
    """Read a config YAML file into a dict of known, well-typed keys (``InputError`` otherwise).

    Example:
    >>> sorted(read_yaml(CONFIG_DIR / "synthetic.yaml"))[:2]
    ['batch_size', 'dataset']
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InputError(f"config {path} is not a text (UTF-8) YAML file") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"config {path} is not valid YAML{where}") from None
    if not isinstance(values, dict):
        raise InputError(f"config {path} must be a mapping of keys to values")
    _check_types(values, f"config {path}")
    return values


def load_config(dataset=None, path=None, **overrides):
    """The effective configuration: dataset defaults < YAML file < explicit overrides.

    Args:
        dataset: selects ``configs/<dataset>.yaml`` (the paper's settings);
            an explicit choice, so it wins over a ``dataset`` in ``path``.
            None: the file's dataset, else ``synthetic``.
        path: an extra YAML file whose values override the dataset's.
        **overrides: explicit values (``None`` means "not given").

    Example:
    >>> load_config("ksdd", lr=1.0).lr
    1.0
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {}
    extra = read_yaml(path) if path else {}
    name = given.get("dataset") or dataset or extra.get("dataset") or "synthetic"
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    base = CONFIG_DIR / f"{name}.yaml"
    if base.exists():
        values.update(read_yaml(base))
    values.update(extra)
    _check_types(given, "option")
    values.update(given)
    values["dataset"] = name
    by_positives = values.get("extra", {}).get("epochs_by_positives", {})
    if "epochs" not in given and "epochs" not in extra and values.get("positives") in by_positives:
        values["epochs"] = int(by_positives[values["positives"]])
    return TrainConfig(**values)
