"""The exception kdefect raises for bad user input (files, sizes, options).

The CLI prints its message as one line and exits with code 2; library users
can catch it as a ``ValueError``.
"""


class InputError(ValueError):
    """Bad input from the user: a missing file, a wrong size, an unknown option value.

    The message names the file or value and what was expected.

    Example:
    >>> try:
    ...     raise InputError("data directory /nope does not exist")
    ... except ValueError as err:
    ...     print(err)
    data directory /nope does not exist
    """


class TrainingDiverged(RuntimeError):
    """Training stopped because a loss (or the weights) became NaN or infinite.

    ``epoch`` is 1-based, ``loss`` one of ``seg_loss``, ``cls_loss``, ``loss``
    (total) or ``weights``. The CLI prints the message as one line and exits
    with code 1 (a failed run, not bad input); the last good checkpoint stays
    in the run directory.

    Example:
    >>> err = TrainingDiverged(3, "cls_loss", float("nan"))
    >>> str(err)
    'training diverged in epoch 3: the classification loss (cls_loss) became nan'
    """

    NAMES = {"seg_loss": "segmentation loss", "cls_loss": "classification loss", "loss": "total loss",
             "weights": "model weights"}

    def __init__(self, epoch, loss, value, note=""):
        self.epoch, self.loss, self.value, self.note = int(epoch), loss, value, note
        what = self.NAMES.get(loss, loss)
        super().__init__(f"training diverged in epoch {self.epoch}: the {what} ({loss}) became {value}{note}")

    def with_note(self, note):
        """The same error with ``note`` appended to its message (e.g. where the checkpoint is)."""
        return TrainingDiverged(self.epoch, self.loss, self.value, self.note + note)
