"""kdefect: end-to-end two-stage surface-defect detection (SegDecNet) in Keras 3."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow C++ info logs unless asked

__version__ = "0.1.0"

from kdefect.layers import FeatureNorm, GlobalPoolStack, GradientScale  # noqa: F401
from kdefect.model import SegDecNet, check_input_shape  # noqa: F401
