"""SegDecNet: the two-stage segmentation + decision network, trained end to end.

The architecture follows the official PyTorch code layer by layer (see
REFERENCE.md §1): a segmentation network at 1/8 resolution and a small
decision network on top of its 1025-channel features. ``SegDecNet`` is a
functional ``keras.Model`` subclass that also carries the paper's training
step (dynamically balanced loss, gradient-flow adjustment, weighted
segmentation loss, mixed supervision).
"""

import math

import keras
import tensorflow as tf
from keras import layers, ops

from kdefect.layers import FeatureNorm, GlobalPoolStack, GradientScale
from kdefect.losses import classification_loss, segmentation_loss

LOSS_REDUCTIONS = ("sum", "mean")


def _xavier_normal():
    # torch.nn.init.xavier_normal_(gain=1): N(0, 2 / (fan_in + fan_out)), untruncated.
    return keras.initializers.VarianceScaling(
        scale=1.0, mode="fan_avg", distribution="untruncated_normal"
    )


def _conv_block(x, filters, kernel_size, name, conv_dtype=None):
    """Conv (no bias, 'same') -> FeatureNorm -> ReLU, as the reference's conv block.

    ``conv_dtype`` overrides the dtype policy of the convolution alone (None: the global policy).
    """
    x = layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=False,
        kernel_initializer=_xavier_normal(),
        name=f"{name}_conv",
        dtype=conv_dtype,
    )(x)
    x = FeatureNorm(name=f"{name}_fn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def check_input_shape(input_shape):
    """Validate an (H, W, C) input shape for SegDecNet; raise ``ValueError`` naming the problem.

    H and W must be divisible by 8, and the decision network's last feature map
    (the 1/8 map pooled three more times, floor mode) must hold at least two
    pixels, otherwise its unbiased std is undefined (the reference yields NaN).

    Example:
    >>> check_input_shape((128, 64, 1))
    (128, 64, 1)
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = (int(v) for v in input_shape)
    if height <= 0 or width <= 0 or channels <= 0:
        raise ValueError(f"input_shape must be positive, got {input_shape!r}")
    if height % 8 or width % 8:
        raise ValueError(
            f"input size {height}x{width} (HxW) is not divisible by 8: SegDecNet's "
            "segmentation output is at 1/8 resolution"
        )
    h64, w64 = height // 8 // 2 // 2 // 2, width // 8 // 2 // 2 // 2
    if h64 * w64 < 2:
        raise ValueError(
            f"input size {height}x{width} (HxW) is too small: the decision network's "
            f"last feature map would be {h64}x{w64} pixels, and FeatureNorm needs at least "
            "2 pixels (use e.g. 128x64 or larger)"
        )
    return (height, width, channels)


@keras.saving.register_keras_serializable(package="kdefect")
class SegDecNet(keras.Model):
    """The end-to-end segmentation + decision network of Božič et al. (ICPR 2020).

    Calling the model on a float batch in [0, 1] of shape (B, H, W, C) returns
    ``(decision_logits (B, 1), segmentation_logits (B, H/8, W/8, 1))``.

    Training (``fit``) expects batches ``(images, targets)`` where ``targets``
    is a dict with ``seg_target`` (soft 1/8 mask), ``seg_weight`` (1/8 loss
    weights), ``cls_target`` (B, 1) and ``is_segmented`` (B, 1); the
    ``kdefect.data`` pipeline produces exactly that. The loss per image is
    ``w_seg * is_segmented * L_seg + w_cls * L_cls`` with ``w_seg = λ`` and
    ``w_cls = δ·(1−λ)`` (dynamic balance) or ``w_seg = 1, w_cls = δ`` (off).
    λ lives in the non-trainable variable ``seg_loss_weight`` and is set each
    epoch by ``kdefect.callbacks.DynamicBalance``.

    Args:
        input_shape: (H, W, C); H and W divisible by 8.
        gradient_adjustment: stop the decision network's gradient from
            reaching the segmentation network (REFERENCE §1.4). Default True.
        first_block_convs: number of 32-channel 5x5 convs in the first block.
            1 is what the published results used; 2 is the JIM 2019 network
            (the reference code comment says the second was left out by accident).
        name: model name.

    Example:
    >>> import numpy as np
    >>> model = SegDecNet(input_shape=(128, 64, 1))
    >>> dec, seg = model(np.zeros((2, 128, 64, 1), "float32"))
    >>> tuple(dec.shape), tuple(seg.shape)
    ((2, 1), (2, 16, 8, 1))
    """

    def __init__(
        self,
        input_shape=(1408, 512, 1),
        gradient_adjustment=True,
        first_block_convs=1,
        name="segdecnet",
        **kwargs,
    ):
        input_shape = check_input_shape(input_shape)
        if first_block_convs not in (1, 2):
            raise ValueError(f"first_block_convs must be 1 or 2, got {first_block_convs!r}")
        multiplier = 0.0 if gradient_adjustment else 1.0

        image = keras.Input(shape=input_shape, name="image")
        x = image
        for i in range(first_block_convs):
            x = _conv_block(x, 32, 5, f"seg_block1_{i + 1}")
        x = layers.MaxPooling2D(2, name="seg_pool1")(x)
        for i in range(3):
            x = _conv_block(x, 64, 5, f"seg_block2_{i + 1}")
        x = layers.MaxPooling2D(2, name="seg_pool2")(x)
        for i in range(4):
            x = _conv_block(x, 64, 5, f"seg_block3_{i + 1}")
        x = layers.MaxPooling2D(2, name="seg_pool3")(x)
        volume = _conv_block(x, 1024, 15, "seg_block4_1")

        seg = layers.Conv2D(
            1, 1, use_bias=False, kernel_initializer=_xavier_normal(),
            name="seg_head_conv", dtype="float32",
        )(volume)
        seg_logits = FeatureNorm(name="seg_head_fn", dtype="float32")(seg)

        d = layers.Concatenate(name="dec_concat")([volume, seg_logits])
        d = GradientScale(multiplier, name="dec_grad_features")(d)
        for i, filters in enumerate((8, 16, 32)):
            d = layers.MaxPooling2D(2, name=f"dec_pool{i + 1}")(d)
            # The 1025-channel conv computes in float32 under every policy: TF 2.21's oneDNN
            # bfloat16 convolution with 1025 input channels sometimes returns NaN for finite
            # inputs (benchmarks/bf16_conv_nan.py); in float32 it costs < 0.3 % of the step.
            d = _conv_block(d, filters, 5, f"dec_block{i + 1}", conv_dtype="float32" if i == 0 else None)
        feat_pool = GlobalPoolStack(name="dec_feature_pool")(d)
        seg_pool = GlobalPoolStack(name="dec_seg_pool", dtype="float32")(seg_logits)
        seg_pool = GradientScale(multiplier, name="dec_grad_seg", dtype="float32")(seg_pool)
        vector = layers.Concatenate(name="dec_vector", dtype="float32")([feat_pool, seg_pool])
        bound = 1.0 / math.sqrt(66.0)  # torch.nn.Linear default init for 66 inputs
        decision = layers.Dense(
            1,
            kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            name="dec_fc",
            dtype="float32",
        )(vector)

        super().__init__(inputs=image, outputs=[decision, seg_logits], name=name, **kwargs)
        self.image_shape = input_shape
        self.gradient_adjustment = bool(gradient_adjustment)
        self.first_block_convs = int(first_block_convs)
        self.delta = 1.0
        self.dynamic_balance = True
        self.loss_reduction = "sum"
        # λ of the dynamically balanced loss; set per epoch by kdefect.callbacks.DynamicBalance.
        self.seg_loss_weight = keras.Variable(
            1.0, trainable=False, dtype="float32", name="seg_loss_weight"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.seg_loss_tracker = keras.metrics.Mean(name="seg_loss")
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        self.auc_metric = keras.metrics.AUC(name="auc", from_logits=True)

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "input_shape": list(self.image_shape),
            "gradient_adjustment": self.gradient_adjustment,
            "first_block_convs": self.first_block_convs,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)

    def count_params(self):
        """Number of network parameters (λ, a training-state variable, is not counted).

        Example:
        >>> SegDecNet(input_shape=(1408, 512, 1)).count_params()
        15637213
        """
        return int(sum(math.prod(w.shape) for l in self.layers for w in l.weights))

    # ----------------------------------------------------------------- compile
    def compile(
        self, optimizer="sgd", delta=1.0, dynamic_balance=True, loss_reduction="sum", **kwargs
    ):
        """Configure training: optimizer and the loss-balancing settings.

        Args:
            optimizer: a Keras optimizer; the paper uses plain SGD (no momentum,
                no weight decay, no schedule), e.g. ``keras.optimizers.SGD(0.5)``.
            delta: δ, the weight of the classification loss.
            dynamic_balance: ``w_seg = λ, w_cls = δ(1−λ)`` with λ from the
                ``DynamicBalance`` callback; when False, ``w_seg = 1, w_cls = δ``.
            loss_reduction: ``"sum"`` (default) sums the per-image losses over
                the batch, which is exactly the gradient of the reference (it
                back-propagates every image and steps once), so the paper's
                learning rates carry over unchanged at any batch size.
                ``"mean"`` divides by the global batch size; then multiply the
                reference learning rate by the batch size to get the same update.

        Example:
        >>> model = SegDecNet(input_shape=(128, 64, 1))
        >>> model.compile(keras.optimizers.SGD(0.5), delta=0.01)
        """
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        self.delta = float(delta)
        self.dynamic_balance = bool(dynamic_balance)
        self.loss_reduction = loss_reduction
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        config.update(
            delta=self.delta,
            dynamic_balance=self.dynamic_balance,
            loss_reduction=self.loss_reduction,
        )
        return config

    def compile_from_config(self, config):
        """Re-compile from ``get_compile_config`` when a ``.keras`` file is loaded."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ losses
    def loss_weights(self):
        """Return ``(w_seg, w_cls)`` for the current λ.

        Example:
        >>> model = SegDecNet(input_shape=(128, 64, 1))
        >>> model.compile(delta=0.5)
        >>> [float(w) for w in model.loss_weights()]
        [1.0, 0.0]
        """
        lam = ops.convert_to_tensor(self.seg_loss_weight)
        if self.dynamic_balance:
            return lam, self.delta * (1.0 - lam)
        return ops.ones_like(lam), ops.full_like(lam, self.delta)

    def compute_losses(self, targets, decision_logits, segmentation_logits):
        """Per-image losses ``(total, seg, cls)``, each of shape (B,).

        Samples with ``is_segmented == 0`` (image-level labels only) get only
        the classification term.
        """
        seg = segmentation_loss(
            targets["seg_target"], segmentation_logits, targets.get("seg_weight")
        )
        cls = classification_loss(targets["cls_target"], decision_logits)
        gamma = ops.reshape(ops.cast(targets["is_segmented"], "float32"), (-1,))
        w_seg, w_cls = self.loss_weights()
        total = w_seg * gamma * seg + w_cls * cls
        return total, seg, cls, gamma

    def _reduce(self, per_sample):
        total = ops.sum(per_sample)
        if self.loss_reduction == "mean":
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            total = total / ops.cast(ops.shape(per_sample)[0] * replicas, "float32")
        return total

    def _update_metrics(self, targets, decision_logits, total, seg, cls, gamma):
        self.loss_tracker.update_state(total)
        self.seg_loss_tracker.update_state(seg, sample_weight=gamma)
        self.cls_loss_tracker.update_state(cls)
        labels = ops.cast(ops.greater(targets["cls_target"], 0.0), "float32")
        self.auc_metric.update_state(labels, decision_logits)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.seg_loss_tracker, self.cls_loss_tracker, self.auc_metric]

    # ------------------------------------------------------------- train/test
    def train_step(self, data):
        images, targets = data[0], data[1]
        with tf.GradientTape() as tape:
            decision_logits, segmentation_logits = self(images, training=True)
            total, seg, cls, gamma = self.compute_losses(
                targets, decision_logits, segmentation_logits
            )
            loss = self._reduce(total)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._update_metrics(targets, decision_logits, total, seg, cls, gamma)

    def test_step(self, data):
        images, targets = data[0], data[1]
        decision_logits, segmentation_logits = self(images, training=False)
        total, seg, cls, gamma = self.compute_losses(targets, decision_logits, segmentation_logits)
        return self._update_metrics(targets, decision_logits, total, seg, cls, gamma)


def float32_copy(model):
    """The same network with the same weights computing in float32; ``model`` itself if it already does.

    A model built under a mixed-precision policy (``mixed_bfloat16`` /
    ``mixed_float16``) keeps that policy in its layers, also when saved and
    reloaded. Mixed precision is a training setting in kdefect: a trained
    model is saved, evaluated and exported as this float32 copy (TFLite has
    no bfloat16 kernels, and float32 serves on every CPU), so every format
    gives the same scores. A compiled model's copy is compiled the same way.
    The global dtype policy is left unchanged.

    Example:
    >>> keras.config.set_dtype_policy("mixed_bfloat16")
    >>> model = SegDecNet(input_shape=(128, 64, 1))
    >>> keras.config.set_dtype_policy("float32")
    >>> model.layers[1].compute_dtype, float32_copy(model).layers[1].compute_dtype
    ('bfloat16', 'float32')
    """
    if all(layer.compute_dtype == "float32" for layer in model.layers):
        return model
    saved = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("float32")
        copy = model.__class__.from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(saved)
    copy.set_weights(model.get_weights())
    if getattr(model, "compiled", False):
        copy.compile_from_config(model.get_compile_config())
    return copy
