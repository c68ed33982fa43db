"""Shared test setup: quiet TensorFlow, the shared dataset location, tiny model sizes."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = (128, 64, 1)  # smallest comfortable SegDecNet input (2x1 pixels at 1/64)


def pytest_collection_modifyitems(config, items):
    """Run the test files with the most ``slow`` tests first, each file's tests together.

    The suite is distributed by file (``--dist loadfile``), so a module-scoped fixture (a trained
    model, an export) is built once, and the long files start first so that the two workers end
    together instead of one finishing a two-minute test alone. The order is the same in every
    worker, as xdist requires.
    """
    slow, first = {}, {}
    for index, item in enumerate(items):
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (-slow[item.path], first[item.path]))


@pytest.fixture(scope="session")
def shared_dir():
    """The read-only ../shared folder with the datasets and spec."""
    return SHARED


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends with Keras' default float32 dtype policy (no leaks between tests)."""
    import keras

    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
