"""Epoch schedules: every positive once plus as many negatives, chosen by frequency of use.

The reference's sampler (REFERENCE.md §3) depends only on how often each
negative has been drawn, never on the model, so the whole seeded multi-epoch
schedule is computed up front here and fed to ``tf.data`` as indices.
"""

import math

import numpy as np


def frequency_probabilities(counts):
    """Selection probabilities of negatives from their usage counts (REFERENCE §3.2).

    ``b = 1 - f / f_max``; ``b = b - median(b) + 1``; ``p = b ** (4 ln N_neg)``;
    normalised. All counts zero (nothing drawn yet) gives a uniform choice.

    Example:
    >>> p = frequency_probabilities(np.array([0, 1, 1, 2]))
    >>> bool(p[0] > p[1] > p[3])
    True
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    if counts.max() <= 0:
        return np.full(n, 1.0 / n)
    base = 1.0 - counts / counts.max()
    base = base - np.median(base) + 1.0
    prob = base ** (4.0 * math.log(n))
    return prob / prob.sum()


class NegativeSampler:
    """Chooses ``num_pos`` distinct negatives per epoch, by frequency of use or uniformly.

    Epoch 0 always takes a uniform random subset (as the reference's first
    permutation); later epochs use ``frequency_probabilities`` of the running
    counts when ``frequency=True``, otherwise a fresh uniform subset.
    ``counts`` holds how often each negative has been used so far; ``draw``
    counts every drawn negative unless told which were actually used
    (``record``), as when ``drop_last`` discards the tail of an epoch.

    Args:
        num_neg: number of negatives available.
        num_pos: negatives drawn per epoch (the number of positives).
        frequency: frequency-of-use sampling (the paper) or uniform.
        rng: a ``numpy.random.Generator``.

    Example:
    >>> s = NegativeSampler(10, 3, True, np.random.default_rng(0))
    >>> len(s.draw()), int(s.counts.sum())
    (3, 3)
    >>> _ = s.draw(record=False); int(s.counts.sum())
    3
    """

    def __init__(self, num_neg, num_pos, frequency=True, rng=None):
        if num_neg < num_pos:
            raise ValueError(
                f"need at least as many negatives as positives, got {num_neg} negatives "
                f"and {num_pos} positives"
            )
        self.num_neg, self.num_pos, self.frequency = int(num_neg), int(num_pos), bool(frequency)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.counts = np.zeros(self.num_neg, dtype=np.int64)
        self.epoch = 0

    def draw(self, record=True):
        """Draw this epoch's negatives (indices into the negatives); count them if ``record``."""
        if self.frequency and self.epoch > 0:
            chosen = self.rng.choice(
                self.num_neg, self.num_pos, replace=False, p=frequency_probabilities(self.counts)
            )
        else:
            chosen = self.rng.permutation(self.num_neg)[: self.num_pos]
        if record:
            self.record(chosen)
        self.epoch += 1
        return chosen

    def record(self, used):
        """Add one use to each negative index in ``used``."""
        np.add.at(self.counts, np.asarray(used, dtype=np.int64), 1)


def epoch_schedule(is_positive, epochs, batch_size, frequency=True, seed=0):
    """The index schedule of a whole training run, shape (epochs, steps_per_epoch * batch_size).

    Each epoch holds every positive once plus as many negatives (chosen by
    ``NegativeSampler``), shuffled together; the incomplete last batch is
    dropped (``drop_last``) and negatives dropped that way are not counted as
    used (the reference counts fetches). Indices refer to the sample table.
    Unlike the reference, negatives are re-drawn exactly at epoch boundaries
    (its re-draw drifts into the epoch when ``2 * num_pos`` is not a multiple
    of the batch size, a side effect of counting fetches).

    Args:
        is_positive: boolean array, one entry per training sample.
        epochs: number of epochs.
        batch_size: images per step.
        frequency: frequency-of-use sampling of negatives.
        seed: RNG seed; the schedule is a pure function of its arguments.

    Returns:
        ``(schedule, counts)``: int64 array (epochs, n) and the final usage
        count of every negative (aligned with ``np.flatnonzero(~is_positive)``).

    Example:
    >>> sched, counts = epoch_schedule(np.array([1, 1, 0, 0, 0], bool), 4, 2)
    >>> sched.shape, int(counts.sum())
    ((4, 4), 8)
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    positives = np.flatnonzero(is_positive)
    negatives = np.flatnonzero(~is_positive)
    if positives.size == 0:
        raise ValueError("the training set has no positive (defective) samples")
    per_epoch = 2 * positives.size
    steps = per_epoch // batch_size
    if steps == 0:
        raise ValueError(
            f"batch size {batch_size} is larger than an epoch ({per_epoch} samples = "
            f"{positives.size} positives + as many negatives)"
        )
    rng = np.random.default_rng(seed)
    sampler = NegativeSampler(negatives.size, positives.size, frequency, rng)
    neg_slot = np.full(is_positive.size, -1, dtype=np.int64)
    neg_slot[negatives] = np.arange(negatives.size)
    rows = []
    for _ in range(epochs):
        epoch = np.concatenate([positives, negatives[sampler.draw(record=False)]])
        used = rng.permutation(epoch)[: steps * batch_size]
        sampler.record(neg_slot[used][neg_slot[used] >= 0])
        rows.append(used)
    return np.stack(rows).astype(np.int64), sampler.counts.copy()
