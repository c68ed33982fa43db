"""kdefect: end-to-end two-stage surface-defect detection (SegDecNet) in Keras 3.

``import kdefect`` registers the model and its layers with Keras, so
``keras.saving.load_model("model.keras")`` works right after it; the rest of
the public API (training, export, prediction) is imported on first use.

Example:
>>> import kdefect
>>> kdefect.SegDecNet(input_shape=(1408, 512, 1)).count_params()
15637213
"""

import importlib
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow C++ info logs unless asked

__version__ = "0.1.0"

_API = {
    "SegDecNet": "kdefect.model",
    "check_input_shape": "kdefect.model",
    "FeatureNorm": "kdefect.layers",
    "GradientScale": "kdefect.layers",
    "GlobalPoolStack": "kdefect.layers",
    "DynamicBalance": "kdefect.callbacks",
    "TrainConfig": "kdefect.config",
    "load_config": "kdefect.config",
    "train": "kdefect.training",
    "evaluate_path": "kdefect.training",
    "export_model": "kdefect.export",
    "export_saved_model": "kdefect.export",
    "export_tflite": "kdefect.export",
    "load_predictor": "kdefect.predict",
    "predict_files": "kdefect.predict",
    "InputError": "kdefect.errors",
}

__all__ = sorted(_API) + ["__version__"]

from kdefect.model import SegDecNet  # noqa: E402,F401  (registers kdefect>SegDecNet and its layers)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdefect' has no attribute {name!r}")


def __dir__():
    return __all__
