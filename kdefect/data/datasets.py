"""Dataset registry: a ``TrainConfig`` -> train / test (/ validation) ``SampleSet``s.

Each dataset has a loader function registered under its CLI name; they all
return ``DataSplits``. The built-in ``synthetic`` loader lives here.

Example:
>>> from kdefect.config import TrainConfig
>>> splits = load_splits(TrainConfig(dataset="synthetic", num_samples=20, input_size=(64, 128)))
>>> len(splits.train) + len(splits.test)
20
"""

from dataclasses import dataclass

import numpy as np

from kdefect.data.labels import LabelConfig
from kdefect.data.samples import SampleSet
from kdefect.data.synthetic import make_synthetic
from kdefect.errors import InputError

LOADERS = {}


@dataclass
class DataSplits:
    """The sample tables of one run (one fold): ``train``, ``test`` and optional ``validation``.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> load_splits(TrainConfig(num_samples=10, input_size=(64, 128))).validation is None
    True
    """

    train: SampleSet
    test: SampleSet
    validation: SampleSet = None


def register(name):
    """Decorator registering ``fn(config) -> DataSplits`` as dataset ``name``.

    Example:
    >>> @register("mine")
    ... def load_mine(config):
    ...     return load_synthetic(config)
    >>> "mine" in LOADERS
    True
    >>> del LOADERS["mine"]
    """

    def wrap(fn):
        LOADERS[name] = fn
        return fn

    return wrap


def label_config(config):
    """The ``LabelConfig`` of a ``TrainConfig``.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> label_config(TrainConfig(dilate=7)).dilate
    7
    """
    return LabelConfig(
        dilate=config.dilate,
        annotation=config.annotation,
        weighted=config.weighted,
        weight_p=config.weight_p,
        weight_max=config.weight_max,
        normalisation=config.weight_norm,
    )


def load_splits(config):
    """Load the dataset named by ``config.dataset`` and split it for ``config.fold``.

    Raises ``InputError`` for unknown datasets and bad data (see the module example).
    """
    if config.dataset not in LOADERS:
        # Loaders of real datasets register on import of their modules.
        import kdefect.data.loaders  # noqa: F401
    try:
        loader = LOADERS[config.dataset]
    except KeyError:
        raise InputError(
            f"unknown dataset {config.dataset!r}; expected one of {', '.join(sorted(LOADERS))}"
        ) from None
    return loader(config)


@register("synthetic")
def load_synthetic(config):
    """The procedural dataset: ``num_samples`` surfaces at ``input_size`` (default 128x128).

    The first ``1 - test_fraction`` of the seeded samples train, the rest test.

    Example:
    >>> from kdefect.config import TrainConfig
    >>> splits = load_synthetic(TrainConfig(num_samples=10, input_size=(64, 128), test_fraction=0.3))
    >>> len(splits.train), len(splits.test)
    (7, 3)
    """
    height, width = config.input_size or (128, 128)
    images, masks, kinds = make_synthetic(
        config.num_samples, height, width, config.channels, seed=config.seed
    )
    names = [f"syn{i:04d}_{k or 'ok'}" for i, k in enumerate(kinds)]
    samples = SampleSet.from_arrays(images, list(masks), names=names, label_config=label_config(config))
    n_train = int(round(len(samples) * (1.0 - config.test_fraction)))
    order = np.arange(len(samples))
    return DataSplits(train=samples.subset(order[:n_train]), test=samples.subset(order[n_train:]))
