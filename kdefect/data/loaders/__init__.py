"""File-based dataset loaders; importing this package registers each under its name.

Each module holds one dataset: ``ksdd``, ``dagm``, ``steel``, ``ksdd2`` and
the user's own ``folder``. All turn a ``TrainConfig`` into ``DataSplits``
via ``kdefect.data.records.build_splits``.

Example:
>>> from kdefect.data.datasets import LOADERS
>>> sorted(n for n in LOADERS if n != "synthetic")
['dagm', 'folder', 'ksdd', 'ksdd2', 'steel']
"""

from kdefect.data.loaders import dagm, folder, ksdd, ksdd2, steel  # noqa: F401
