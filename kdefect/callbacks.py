"""Training callbacks: the per-epoch λ schedule of the dynamically balanced loss."""

import keras


class DynamicBalance(keras.callbacks.Callback):
    """Sets λ (``model.seg_loss_weight``) at the start of every epoch.

    With the schedule on, ``λ = 1 - epoch / epochs`` (0-based epoch), so the
    classification weight ``δ(1-λ)`` is 0 in epoch 0 and the segmentation
    weight is ``1/epochs`` in the last epoch (REFERENCE §2.3). With it off λ is
    held at 1 (and the model uses ``w_seg = 1, w_cls = δ``). The value of each
    epoch is recorded in ``history`` so it can be plotted next to the losses.

    Args:
        epochs: total number of epochs E of the run.
        enabled: the dynamic schedule on/off.

    Example:
    >>> cb = DynamicBalance(epochs=4)
    >>> [cb.value(e) for e in range(4)]
    [1.0, 0.75, 0.5, 0.25]
    """

    def __init__(self, epochs, enabled=True):
        super().__init__()
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs!r}")
        self.epochs = int(epochs)
        self.enabled = bool(enabled)
        self.history = {}

    def value(self, epoch):
        """λ for a 0-based epoch."""
        return 1.0 - epoch / self.epochs if self.enabled else 1.0

    def on_epoch_begin(self, epoch, logs=None):
        lam = self.value(epoch)
        self.model.seg_loss_weight.assign(lam)
        self.history[epoch] = lam

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lambda"] = self.history.get(epoch, self.value(epoch))
