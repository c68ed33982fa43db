"""How often each negative is used in a run: frequency-of-use vs uniform sampling (paper Fig. 2).

Both come from the same ``sampling.epoch_schedule`` the training run uses,
so the histogram shows exactly what a run with those settings would see.
"""

from pathlib import Path

import numpy as np

from kdefect.data.sampling import epoch_schedule


def negative_usage(is_positive, epochs, batch_size=1, seed=0):
    """Usage count of every negative over ``epochs``, for frequency-of-use and uniform sampling.

    Returns ``{"frequency": counts, "uniform": counts}``, int64 arrays
    aligned with ``np.flatnonzero(~is_positive)``.

    Example:
    >>> usage = negative_usage(np.r_[np.ones(10, bool), np.zeros(50, bool)], epochs=20)
    >>> int(usage["frequency"].sum()) == int(usage["uniform"].sum()) == 200
    True
    >>> bool(usage["frequency"].std() < usage["uniform"].std())
    True
    """
    return {
        kind: epoch_schedule(is_positive, epochs, batch_size, frequency=frequency, seed=seed)[1]
        for kind, frequency in (("frequency", True), ("uniform", False))
    }


def usage_histogram(counts):
    """``(uses, number_of_negatives)``: how many negatives were used 0, 1, 2, ... times.

    Example:
    >>> usage_histogram(np.array([0, 2, 2, 3]))
    (array([0, 1, 2, 3]), array([1, 0, 2, 1]))
    """
    counts = np.asarray(counts, dtype=np.int64)
    tally = np.bincount(counts, minlength=1)
    return np.arange(tally.size), tally


def plot_negative_usage(usage, path, title="Usage of negatives"):
    """Save the usage histograms of ``negative_usage`` as a PNG (matplotlib, Agg); returns the path.

    Example:
    >>> import tempfile
    >>> usage = negative_usage(np.r_[np.ones(5, bool), np.zeros(20, bool)], epochs=10)
    >>> plot_negative_usage(usage, Path(tempfile.mkdtemp()) / "usage.png").stat().st_size > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(usage), 1)
    for k, (kind, counts) in enumerate(usage.items()):
        uses, tally = usage_histogram(counts)
        label = f"{kind} (std {np.std(counts):.2f})"
        axes.bar(uses + (k - (len(usage) - 1) / 2) * width, tally, width=width, label=label)
    axes.set_xlabel("times a negative was used")
    axes.set_ylabel("number of negatives")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
