"""Training callbacks: the per-epoch λ schedule, validation AP, checkpoints and the NaN guard.

Checkpoints (``EpochCheckpoint``) make an interrupted run resumable: at every
epoch end the model (weights, optimizer state and λ, all in one ``.keras``
file) and a small ``state.json`` (epochs done, λ, validation best, a
fingerprint of the epoch schedule) are written atomically (temporary file,
``fsync``, ``os.replace``) into ``<run>/checkpoint/``.
"""

import json
import math
import os
from pathlib import Path

import keras
import numpy as np

from kdefect.errors import TrainingDiverged

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


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
                atomic_save(self.model, self.best_path)


def _fsync(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(path, write):
    """Create ``path`` via ``write(temporary_path)``, then ``fsync`` and rename it into place.

    A crash at any moment leaves either the old file or the complete new one,
    never a partial file (the temporary file sits in the same folder, so the
    rename is atomic). The temporary name keeps the suffix, as ``model.save``
    wants ``.keras``.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> replace_atomically(target, lambda tmp: tmp.write_text("hello"))
    >>> target.read_text()
    'hello'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save(model, path):
    """``model.save(path)`` (``.keras``, optimizer state included) without a half-written file.

    Example:
    >>> import tempfile
    >>> from kdefect import SegDecNet
    >>> target = Path(tempfile.mkdtemp()) / "m.keras"
    >>> atomic_save(SegDecNet(input_shape=(128, 64, 1)), target); target.exists()
    True
    """
    replace_atomically(path, model.save)


def write_json_atomic(path, data):
    """Write ``data`` as JSON atomically (see ``replace_atomically``).

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "s.json"
    >>> write_json_atomic(target, {"epoch": 2}); json.loads(target.read_text())
    {'epoch': 2}
    """
    text = json.dumps(data, indent=2, default=_plain)
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_checkpoint(folder):
    """The checkpoint state of a run (or fold) folder: the ``state.json`` dict, or None.

    Example:
    >>> import tempfile
    >>> read_checkpoint(tempfile.mkdtemp()) is None
    True
    """
    path = Path(folder) / CHECKPOINT_DIR / STATE_FILE
    if not path.exists():
        return None
    from kdefect.errors import InputError

    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"checkpoint state {path} is unreadable ({err}); start over with --overwrite") from None
    if not isinstance(state, dict) or "status" not in state:
        raise InputError(f"checkpoint state {path} is not a kdefect checkpoint; start over with --overwrite")
    return state


def weights_finite(model):
    """Whether every trainable weight of ``model`` is finite.

    Example:
    >>> from kdefect import SegDecNet
    >>> weights_finite(SegDecNet(input_shape=(128, 64, 1)))
    True
    """
    return all(bool(np.isfinite(keras.ops.convert_to_numpy(v)).all()) for v in model.trainable_variables)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the training state atomically at every epoch end, for ``kdefect train --resume``.

    Writes ``<folder>/checkpoint/epoch-NNNN.keras`` (weights, optimizer state,
    λ) and then ``state.json`` pointing to it, each via a temporary file and an
    atomic rename; older epoch files are removed afterwards. A crash at any
    point leaves a complete, consistent previous state. Weights that became
    non-finite raise ``TrainingDiverged`` instead of being saved. Put it last
    in the callback list, so that the λ, validation and CSV callbacks of the
    epoch have run.

    Args:
        folder: the run (or fold) directory.
        epochs: total epochs of the run.
        validation: the run's ``ValidationAP`` callback (its best AP/epoch are saved), or None.
        extra: more JSON-able facts to store (e.g. the schedule fingerprint).

    Example:
    >>> import tempfile
    >>> cb = EpochCheckpoint(tempfile.mkdtemp(), epochs=4)
    >>> cb.directory.name
    'checkpoint'
    """

    def __init__(self, folder, epochs, validation=None, extra=None):
        super().__init__()
        self.directory = Path(folder) / CHECKPOINT_DIR
        self.epochs = int(epochs)
        self.validation = validation
        self.extra = dict(extra or {})

    def on_train_begin(self, logs=None):
        # Temporary files of a process killed while writing: never referenced, safe to drop.
        for stale in self.directory.glob(".*.tmp-*"):
            stale.unlink()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not weights_finite(self.model):
            raise TrainingDiverged(epoch + 1, "weights", "non-finite after the last update")
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.keras"
        atomic_save(self.model, self.directory / name)
        state = {
            "format": 1,
            "status": "training",
            "epoch": epoch + 1,
            "epochs": self.epochs,
            "model": name,
            "lambda": float(keras.ops.convert_to_numpy(self.model.seg_loss_weight)),
            "iterations": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            "logs": {k: float(v) for k, v in logs.items() if _is_number(v)},
            **self.extra,
        }
        if self.validation is not None:
            state["best_val_ap"] = self.validation.best_ap
            state["best_epoch"] = self.validation.best_epoch
        write_json_atomic(self.directory / STATE_FILE, state)
        for old in self.directory.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink()


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training with ``TrainingDiverged`` as soon as a loss is NaN or infinite.

    Checks the running losses after every batch, in the order segmentation,
    classification, total, and names the first non-finite one and the
    (1-based) epoch. The exception leaves the epoch unfinished, so no
    checkpoint of it is written: the last good one stays.

    Example:
    >>> guard = NonFiniteGuard()
    >>> guard.on_epoch_begin(2)
    >>> try:
    ...     guard.on_train_batch_end(0, {"seg_loss": 0.5, "cls_loss": float("inf"), "loss": float("inf")})
    ... except TrainingDiverged as err:
    ...     print(err)
    training diverged in epoch 3: the classification loss (cls_loss) became inf
    """

    LOSSES = ("seg_loss", "cls_loss", "loss")

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key in self.LOSSES:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise TrainingDiverged(self.epoch + 1, key, float(value))
