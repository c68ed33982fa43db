"""Per-sample losses of the end-to-end SegDecNet objective.

Both functions return one value per image; the model combines them as
``w_seg * is_segmented * L_seg + w_cls * L_cls`` and sums over the batch
(see ``SegDecNet.train_step``).
"""

from keras import ops


def segmentation_loss(target, logits, weight=None):
    """Weighted binary cross-entropy on the 1/8 segmentation logits, one value per image.

    ``mean_pixels(BCE(target, logits) * weight)``: the divisor is the pixel
    count, not the sum of the weights (as the reference does).

    Args:
        target: soft 1/8 mask in [0, 1], shape (B, h, w, 1).
        logits: segmentation logits, shape (B, h, w, 1).
        weight: per-pixel loss weights of the same shape, or None for 1.

    Returns:
        Tensor of shape (B,).

    Example:
    >>> import numpy as np
    >>> t = np.zeros((1, 2, 2, 1), "float32")
    >>> round(float(segmentation_loss(t, t)[0]), 4)  # BCE(0, sigmoid(0)) = ln 2
    0.6931
    """
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    bce = ops.binary_crossentropy(target, logits, from_logits=True)
    if weight is not None:
        bce = bce * ops.cast(weight, "float32")
    return ops.mean(bce, axis=(1, 2, 3))


def classification_loss(target, logits):
    """Binary cross-entropy on the image-level decision logit, one value per image.

    Args:
        target: classification target in [0, 1] (soft or hard), shape (B, 1).
        logits: decision logits, shape (B, 1).

    Returns:
        Tensor of shape (B,).

    Example:
    >>> import numpy as np
    >>> round(float(classification_loss(np.ones((1, 1), "float32"), np.zeros((1, 1), "float32"))[0]), 4)
    0.6931
    """
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    return ops.mean(ops.binary_crossentropy(target, logits, from_logits=True), axis=-1)
