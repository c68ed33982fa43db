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


class ValidationAP(keras.callbacks.Callback):
    """Image-level AP on a validation set every ``every`` epochs and after the last one.

    Follows the reference (REFERENCE §7.2): validation after epochs 0, N, 2N, …
    and the last epoch; the model is saved to ``best_path`` whenever AP
    strictly improves. The value is logged as ``val_ap`` (NaN on epochs
    without validation) so ``CSVLogger`` and the history plot can show it.

    Args:
        dataset: a ``tf.data`` evaluation dataset of the validation samples.
        labels: their image-level ground truth (bool array).
        epochs: total epochs E (to validate after the last one).
        every: validation interval N in epochs (0: only after the last epoch).
        best_path: where to save the best model (``.keras``), or None.

    Example:
    >>> import numpy as np
    >>> cb = ValidationAP(dataset=None, labels=np.array([True, False]), epochs=10, every=5)
    >>> [e for e in range(10) if cb.due(e)]
    [0, 5, 9]
    """

    def __init__(self, dataset, labels, epochs, every=5, best_path=None):
        super().__init__()
        self.dataset, self.labels = dataset, labels
        self.epochs, self.every, self.best_path = int(epochs), int(every), best_path
        self.best_ap, self.best_epoch = -1.0, None

    def due(self, epoch):
        """Whether to validate after this 0-based epoch."""
        return epoch == self.epochs - 1 or (self.every > 0 and epoch % self.every == 0)

    def on_epoch_end(self, epoch, logs=None):
        from kdefect.evaluation import predict_scores
        from kdefect.metrics import image_metrics

        logs = logs if logs is not None else {}
        if not self.due(epoch):
            logs["val_ap"] = float("nan")
            return
        scores, _ = predict_scores(self.model, self.dataset)
        ap = image_metrics(self.labels, scores)["ap"]
        logs["val_ap"] = ap
        if ap > self.best_ap:
            self.best_ap, self.best_epoch = ap, epoch
            if self.best_path is not None:
                self.model.save(self.best_path)
