"""Shared test setup: quiet TensorFlow, the shared dataset location, tiny model sizes."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = (128, 64, 1)  # smallest comfortable SegDecNet input (2x1 pixels at 1/64)


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
