"""MarginLoss's sampler: the counter-based generator against its published known answers, and the core's draw
frequencies against the weights of margin.hpp (the reference's), with planted wrong weights that the same test
must reject."""
import numpy as np
import pytest
from scipy import stats

import caffe_mining
from caffe_mining import reference

# Random123's known-answer vectors for Philox4x32-10 (kat_vectors): counter, key, output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_reference_philox_matches_known_answers(counter, key, expected):
    assert reference.philox4x32_10(np.array([counter]), key)[0].tolist() == list(expected)


def test_uniforms_use_53_bits_below_one():
    u = reference.margin_uniforms(7, 0, np.arange(2000) % 10, np.arange(2000) // 10, 0)
    assert np.all((0 <= u) & (u < 1)) and len(np.unique(u)) == 2000
    assert np.all(u * 2**53 == np.floor(u * 2**53))
    assert abs(u.mean() - 0.5) < 0.03


# Fixed embeddings: 8 unit rows in D = 5, 4 classes of 2; their distances spread from below the cutoff (0.5) to
# beyond nonzero_loss_cutoff (1.4), so every part of the weight shows.
DIM = 5
LABELS = np.repeat(np.arange(4), 2)


def fixed_embedding():
    rng = np.random.default_rng(12345)
    x = rng.normal(size=(8, DIM))
    x[1] = x[0] + 0.3 * rng.normal(size=DIM)
    x[2] = x[0] + 0.25 * rng.normal(size=DIM)  # another class, close to row 0: d̂ = cutoff
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def draw_counts(x, draws_per_seed=250, seeds=20, **kwargs):
    """counts[a, j]: how often the core drew j as a negative of anchor a over many seeds."""
    counts = np.zeros((len(x), len(x)), np.int64)
    for seed in range(seeds):
        t = caffe_mining.margin_loss(x, LABELS, negatives_per_positive=draws_per_seed, seed=seed, backward=False,
                                     **kwargs).triplets
        np.add.at(counts, (t[:, 0], t[:, 2]), 1)
    return counts


def chi_square_p_value(counts, prob):
    """p-value of the observed counts under the rows of ``prob`` (Pearson, over the cells of non-zero
    probability); a draw where prob = 0 gives p = 0."""
    if np.any(counts[prob == 0] > 0):
        return 0.0
    statistic, dof = 0.0, 0
    for row_counts, row_prob in zip(counts, prob):
        support = row_prob > 0
        if row_counts.sum() == 0 or support.sum() < 2:
            continue
        expected = row_counts.sum() * row_prob[support]
        statistic += float(((row_counts[support] - expected) ** 2 / expected).sum())
        dof += int(support.sum()) - 1
    return float(stats.chi2.sf(statistic, dof))


def weights_with(x, exponent_shift=0.0, gap_shift=0.0, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """The sampling probabilities with a planted change: the d exponent -(D - 2 + exponent_shift), the gap's
    -((D - 3 + gap_shift) / 2), or other cutoffs."""
    d = reference.margin_distance_matrix(x)
    clipped = np.maximum(d, cutoff)
    log_w = (-(DIM - 2 + exponent_shift) * np.log(clipped)
             - (DIM - 3 + gap_shift) / 2 * np.log(np.maximum(1 - clipped ** 2 / 4, 1e-12)))
    allowed = (LABELS[:, None] != LABELS[None, :]) & ((d < nonzero_loss_cutoff) if nonzero_loss_cutoff > 0 else True)
    w = np.where(allowed, np.exp(log_w - np.max(np.where(allowed, log_w, -np.inf), axis=1, keepdims=True)), 0.0)
    return w / w.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def observed():
    x = fixed_embedding()
    return x, draw_counts(x)


def test_the_fixed_embedding_exercises_every_rule(observed):
    x, _ = observed
    d = reference.margin_distance_matrix(x)
    other = LABELS[:, None] != LABELS[None, :]
    assert np.any(other & (d < 0.5)) and np.any(other & (d >= 1.4)) and np.any(other & (d > 0.5) & (d < 1.4))


def test_draw_frequencies_match_the_weights(observed):
    x, counts = observed
    prob = reference.margin_sampling_weights(x, LABELS)
    assert np.allclose(prob, weights_with(x))  # the reference's weights are the formula's
    assert counts.sum() == 8 * 250 * 20
    assert chi_square_p_value(counts, prob) > 1e-4


def test_uniform_draw_frequencies_are_uniform():
    x = fixed_embedding()
    counts = draw_counts(x, sampler="UNIFORM", seeds=10)
    assert chi_square_p_value(counts, reference.margin_sampling_weights(x, LABELS, sampler="UNIFORM")) > 1e-4


@pytest.mark.parametrize("planted", [
    dict(exponent_shift=1.0),   # d^(D-1) instead of d^(D-2)
    dict(gap_shift=1.0),        # (1 - d^2/4)^((D-2)/2) instead of ^((D-3)/2)
    dict(cutoff=0.3),           # the cutoff not applied where it should be
    dict(nonzero_loss_cutoff=0.0),  # the far negatives kept
], ids=str)
def test_planted_wrong_weights_are_rejected(observed, planted):
    x, counts = observed
    assert chi_square_p_value(counts, weights_with(x, **planted)) < 1e-8


def test_uniform_weights_are_rejected_for_distance_weighted_draws(observed):
    x, counts = observed
    assert chi_square_p_value(counts, reference.margin_sampling_weights(x, LABELS, sampler="UNIFORM")) < 1e-8
