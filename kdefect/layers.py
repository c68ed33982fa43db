"""Registered custom layers of SegDecNet: ``FeatureNorm`` and ``GradientScale``.

Both are serialisable under the ``kdefect>`` package name, so a model that uses
them reloads from a ``.keras`` file once ``kdefect`` is imported.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kdefect")
class FeatureNorm(keras.layers.Layer):
    """Per-sample, per-channel normalisation over the spatial axes (reference quirks kept).

    Computes ``y = scale * (x - mean_HW) / sqrt(std_HW + eps) + bias`` where
    ``std_HW`` is the *unbiased* (N-1) standard deviation over height and width,
    exactly as the official PyTorch code does. Note the square root of
    ``std + eps`` (not of ``var + eps``): this quirk changes the effective scale
    of every activation and is needed to reproduce the paper's learning rates.

    There are no running statistics, so training and inference behave the
    same and samples in a batch are independent. Statistics are computed in
    float32 even under a mixed-precision policy.

    The gradient of ``sqrt(var)`` is infinite at ``var == 0`` (a channel that
    is constant over the image, e.g. all-zero after a ReLU); PyTorch returns
    NaN there. We take ``sqrt(max(var, 1e-12))`` instead, which changes the
    value by at most 1e-6 (negligible against ``eps = 1e-3``) and keeps the
    gradient finite.

    Args:
        epsilon: added to the std before the square root (reference: 1e-3).

    Example:
    >>> import numpy as np
    >>> layer = FeatureNorm()
    >>> y = layer(np.random.rand(2, 8, 8, 3).astype("float32"))
    >>> tuple(y.shape)
    (2, 8, 8, 3)
    """

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.scale = self.add_weight(
            name="scale", shape=(channels,), initializer="ones", trainable=True
        )
        self.bias = self.add_weight(
            name="bias", shape=(channels,), initializer="zeros", trainable=True
        )

    def call(self, x):
        dtype = x.dtype
        x = ops.cast(x, "float32")
        n = ops.cast(ops.shape(x)[1] * ops.shape(x)[2], "float32")
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        centred = x - mean
        var = ops.sum(ops.square(centred), axis=(1, 2), keepdims=True) / (n - 1.0)
        std = ops.sqrt(ops.maximum(var, 1e-12))
        scale = ops.cast(self.scale, "float32")
        bias = ops.cast(self.bias, "float32")
        y = scale * centred / ops.sqrt(std + self.epsilon) + bias
        return ops.cast(y, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kdefect")
class GradientScale(keras.layers.Layer):
    """Identity in the forward pass; multiplies the gradient by ``multiplier``.

    This is the reference's ``GradientMultiplyLayer``. With ``multiplier=0``
    (gradient-flow adjustment on) it is a plain ``stop_gradient``, so no
    gradient at all flows back through it; with 1 it is an identity; other
    values compute ``stop_gradient(x) + m * (x - stop_gradient(x))``.

    Args:
        multiplier: factor applied to the incoming gradient.

    Example:
    >>> import numpy as np
    >>> GradientScale(0.0)(np.ones((1, 2), "float32")).numpy().tolist()
    [[1.0, 1.0]]
    """

    def __init__(self, multiplier=0.0, **kwargs):
        super().__init__(**kwargs)
        self.multiplier = float(multiplier)

    def call(self, x):
        if self.multiplier == 0.0:
            return ops.stop_gradient(x)
        if self.multiplier == 1.0:
            return x
        frozen = ops.stop_gradient(x)
        return frozen + self.multiplier * (x - frozen)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier}


@keras.saving.register_keras_serializable(package="kdefect")
class GlobalPoolStack(keras.layers.Layer):
    """Global max and average pooling over H and W, concatenated as ``[max, avg]``.

    Used for the decision head's 66-d vector
    ``[GMP(features), GAP(features), GMP(seg), GAP(seg)]``.

    Example:
    >>> import numpy as np
    >>> GlobalPoolStack()(np.arange(4, dtype="float32").reshape(1, 2, 2, 1)).numpy().tolist()
    [[3.0, 1.5]]
    """

    def call(self, x):
        return ops.concatenate(
            [ops.max(x, axis=(1, 2)), ops.mean(x, axis=(1, 2))], axis=-1
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])
