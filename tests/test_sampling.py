"""Frequency-of-use negative sampling (REFERENCE §3.2), epoch schedules and the usage histogram."""

import math

import numpy as np
import pytest

from kdefect.data.pipeline import training_dataset
from kdefect.data.samples import SampleSet
from kdefect.data.sampling import NegativeSampler, epoch_schedule, frequency_probabilities
from kdefect.data.usage import negative_usage, plot_negative_usage, usage_histogram

# KSDD fold 0 of split_33_33: 34 positives, 230 negatives.
KSDD_LIKE = np.r_[np.ones(34, bool), np.zeros(230, bool)]


def test_frequency_probabilities_by_hand():
    counts = [0, 1, 1, 2]
    # b = 1 - f/f_max = [1, .5, .5, 0]; median .5 -> b - .5 + 1 = [1.5, 1, 1, .5]; p = b ** (4 ln 4)
    exponent = 4 * math.log(4)
    raw = [1.5**exponent, 1.0, 1.0, 0.5**exponent]
    expected = np.array(raw) / sum(raw)
    np.testing.assert_allclose(frequency_probabilities(counts), expected, rtol=1e-12)
    np.testing.assert_allclose(frequency_probabilities([0, 0, 0]), [1 / 3] * 3)
    # Rarely used negatives are strongly favoured: exponent ~21.8 for 230 negatives;
    # half unused, half used once: b = [1.5, 0.5] after the median shift.
    p = frequency_probabilities(np.r_[np.zeros(115), np.ones(115)])
    assert p[0] / p[-1] == pytest.approx(3.0 ** (4 * math.log(230)))


def test_sampler_draws_distinct_negatives():
    sampler = NegativeSampler(20, 7, frequency=True, rng=np.random.default_rng(0))
    for _ in range(10):
        chosen = sampler.draw()
        assert len(set(chosen.tolist())) == 7 and chosen.max() < 20
    assert sampler.counts.sum() == 70
    with pytest.raises(ValueError, match="at least as many negatives"):
        NegativeSampler(3, 5)


@pytest.mark.parametrize("frequency", [True, False])
def test_schedule_every_positive_once_per_epoch(frequency):
    is_positive = np.r_[np.ones(6, bool), np.zeros(15, bool)]
    schedule, counts = epoch_schedule(is_positive, epochs=5, batch_size=4, frequency=frequency, seed=7)
    assert schedule.shape == (5, 12)  # 2 * 6 = 12 samples, divisible by 4
    for row in schedule:
        assert sorted(row[is_positive[row]].tolist()) == list(range(6))  # every positive exactly once
        negatives = row[~is_positive[row]]
        assert len(negatives) == 6 and len(set(negatives.tolist())) == 6  # distinct negatives
    assert counts.sum() == 5 * 6
    np.testing.assert_array_equal(counts, np.bincount(schedule[~is_positive[schedule]] - 6, minlength=15))


def test_schedule_drop_last_and_determinism():
    is_positive = np.r_[np.ones(5, bool), np.zeros(9, bool)]
    schedule, counts = epoch_schedule(is_positive, epochs=4, batch_size=4, seed=1)
    assert schedule.shape == (4, 8)  # 10 samples per epoch, the last incomplete batch dropped
    for row in schedule:
        assert len(set(row.tolist())) == 8  # positives at most once, negatives distinct
    assert counts.sum() == (~is_positive[schedule]).sum()  # dropped negatives are not counted
    again, _ = epoch_schedule(is_positive, epochs=4, batch_size=4, seed=1)
    np.testing.assert_array_equal(schedule, again)
    with pytest.raises(ValueError, match="batch size 12 is larger than an epoch"):
        epoch_schedule(is_positive, epochs=1, batch_size=12)


def test_frequency_sampling_has_a_much_narrower_usage_spread(tmp_path):
    usage = negative_usage(KSDD_LIKE, epochs=50, batch_size=1, seed=0)
    freq, uniform = usage["frequency"], usage["uniform"]
    assert freq.sum() == uniform.sum() == 50 * 34
    assert freq.std() < 0.3 * uniform.std()
    assert (freq.max() - freq.min()) < (uniform.max() - uniform.min()) / 2
    assert freq.min() > 0 and uniform.min() <= freq.min()  # no negative left unused
    uses, tally = usage_histogram(freq)
    assert tally.sum() == 230 and (uses * tally).sum() == freq.sum()
    path = plot_negative_usage(usage, tmp_path / "fig" / "usage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pipeline_follows_the_schedule():
    # Image i is filled with the value i, so a batch shows which samples it holds.
    n = 12
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 64, 64, 1), np.uint8)
    masks = [np.ones((64, 64), np.uint8) if i < 4 else None for i in range(n)]
    samples = SampleSet.from_arrays(images, masks)
    schedule, _ = epoch_schedule(samples.is_positive, epochs=3, batch_size=2, seed=5)
    seen = [x.numpy()[:, 0, 0, 0] for x, _ in training_dataset(samples, schedule, 2)]
    np.testing.assert_allclose(np.concatenate(seen) * 255, schedule.reshape(-1))
    # tf.data iterates the same schedule again (no hidden sampler state in a generator).
    seen2 = [x.numpy()[:, 0, 0, 0] for x, _ in training_dataset(samples, schedule, 2)]
    np.testing.assert_array_equal(np.concatenate(seen), np.concatenate(seen2))
