"""HardNet MIN without anchor swap, at the last bit: the CPU core mines that case on the squared distance x and takes
one square root per row, and must still decide exactly as the header's rule on D = sqrt(x) rounded in the features'
dtype. Two float32 values of x can share one D: the lowest such column wins a tie, and a D equal to the duplicate
threshold is valid even where x < threshold**2. The cases are built in 1-D, where every product is exact and the
expected decisions can be computed in NumPy with the same float32 operations as the core."""
import numpy as np
import pytest

import caffe_mining

EPS = 1e-6


def rule_in_dtype(anchor, positive, labels, threshold, dtype):
    """The header's MIN rule in `dtype`: D_ij = sqrt(max(a_i^2 + p_j^2 - 2 a_i p_j, 0) + eps), valid when j != i,
    not D_ij < threshold and labels differ; the smallest D, lowest j at equal D. 1-D inputs only."""
    a, p = anchor.astype(dtype)[:, 0], positive.astype(dtype)[:, 0]
    two, eps = dtype(2), dtype(EPS)
    sq = (a[:, None] * a[:, None] + p[None, :] * p[None, :]) - two * (a[:, None] * p[None, :])
    dist = np.sqrt(np.where(sq > 0, sq, dtype(0)) + eps)
    n = len(a)
    valid = ~np.eye(n, dtype=bool) & ~(dist < dtype(threshold))
    if labels is not None:
        valid &= labels[:, None] != labels[None, :]
    masked = np.where(valid, dist, np.inf)
    index = np.where(valid.any(axis=1), np.argmin(masked, axis=1), -1)  # argmin: first of equal values
    return index, valid.sum(axis=1), np.diag(dist)


def squared(p):
    """x of a positive p against a zero anchor, in float32 (what the core computes for that pair)."""
    p = np.float32(p)
    return (p * p - np.float32(2) * (np.float32(0) * p)) + np.float32(EPS)


def float32_twins(start, below_square=False):
    """(p_hi, p_lo): neighbouring float32 values from `start` up whose x differ while D = sqrt(x) is the same.
    below_square: also x(p_lo) < D**2 rounded, so that comparing x with the squared threshold would misjudge it."""
    p_lo = np.float32(start)
    for _ in range(100000):
        p_hi = np.nextafter(p_lo, np.float32(1))
        x_lo, x_hi = squared(p_lo), squared(p_hi)
        d = np.sqrt(x_hi)
        if x_hi > x_lo and np.sqrt(x_lo) == d and (not below_square or x_lo < d * d):
            return p_hi, p_lo
        p_lo = p_hi
    raise AssertionError(f"no float32 twins within 100000 steps of {start}")


def spread_positives(n, rng):
    """n distinct positives in [0.8, 0.95]: far from every twin below, so only the twins can be a row's minimum."""
    return rng.permutation(np.linspace(0.8, 0.95, n)).astype(np.float32)


def check_against_rule(anchor, positive, labels, threshold, dtype):
    got = caffe_mining.hardnet_loss(anchor.astype(dtype), positive.astype(dtype), labels, batch_reduce="MIN",
                                    anchor_swap=False, duplicate_threshold=threshold)
    index, count, pos = rule_in_dtype(anchor, positive, labels, threshold, dtype)
    assert got.neg_index.tolist() == index.tolist()
    assert got.neg_count.tolist() == count.tolist()
    np.testing.assert_array_equal(got.pos_dist, pos)
    return got


# The twins' columns: both in one group of 4 columns (the vector scan's lanes), in different lane groups of one
# block, and in different blocks of 64 columns (the larger-x twin always at the lower column).
@pytest.mark.parametrize("n,columns", [(16, (9, 10)), (40, (3, 30)), (130, (5, 100)), (130, (64, 129))])
@pytest.mark.parametrize("with_labels", [False, True])
def test_float32_tie_on_d_goes_to_the_lowest_column_though_its_x_is_larger(n, columns, with_labels):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55)
    positive = spread_positives(n, rng)
    positive[columns[0]], positive[columns[1]] = p_hi, p_lo
    anchor = np.zeros(n, np.float32)[:, None]
    labels = np.arange(n, dtype=np.float64) if with_labels else None
    got = check_against_rule(anchor, positive[:, None], labels, 0.008, np.float32)
    others = [i for i in range(n) if i not in columns]
    assert set(got.neg_index[others].tolist()) == {columns[0]}  # not the smaller-x twin
    assert got.neg_index[columns[0]] == columns[1] and got.neg_index[columns[1]] == columns[0]


@pytest.mark.parametrize("n,columns", [(12, (4, 7)), (130, (2, 90))])
def test_float32_distance_equal_to_the_threshold_is_valid_though_x_is_below_its_square(n, columns):
    rng = np.random.default_rng(n)
    p_hi, p_lo = float32_twins(0.55, below_square=True)
    threshold = float(np.sqrt(squared(p_hi)))  # exactly D of both twins
    positive = spread_positives(n, rng)
    positive[columns[0]], positive[columns[1]] = p_hi, p_lo
    below = np.nextafter(p_lo, np.float32(0))  # D just under the threshold: a duplicate
    while np.sqrt(squared(below)) >= np.float32(threshold):
        below = np.nextafter(below, np.float32(0))
    positive[n - 1] = below
    anchor = np.zeros(n, np.float32)[:, None]
    got = check_against_rule(anchor, positive[:, None], None, threshold, np.float32)
    assert got.neg_count[0] == n - 2  # every column but the row's own and the one below the threshold
    assert got.neg_index[0] == columns[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 63, 64, 65, 127, 129, 200])
@pytest.mark.parametrize("with_labels", [False, True])
def test_min_decisions_follow_the_rule_in_the_features_dtype(dtype, n, with_labels):
    """Values on a coarse grid: many exact ties of D (lowest column wins), duplicates at D = sqrt(eps) below the
    threshold, rows left without a negative by the labels; every block size and tail of the row scan."""
    rng = np.random.default_rng(1000 + n)
    anchor = rng.integers(0, 12, size=(n, 1)) / 8.0
    positive = rng.integers(0, 12, size=(n, 1)) / 8.0
    labels = rng.integers(0, 3, size=n).astype(np.float64) if with_labels else None
    check_against_rule(anchor, positive, labels, 0.008, dtype)


@pytest.mark.parametrize("n", [63, 64, 65, 150])
@pytest.mark.parametrize("with_labels", [False, True])
def test_min_matches_the_reference_in_float64_across_blocks(n, with_labels):
    """General descriptors (8-D) over more than one block of 64 columns, duplicates included: decisions, distances
    and gradients against the NumPy reference."""
    from caffe_mining import reference

    rng = np.random.default_rng(n)
    anchor = rng.normal(size=(n, 8)) / np.sqrt(8)
    positive = anchor + 0.3 * rng.normal(size=(n, 8)) / np.sqrt(8)
    positive[n // 2] = anchor[3]  # a duplicate: never a negative of row 3
    labels = rng.integers(0, 20, size=n).astype(np.float64) if with_labels else None
    got = caffe_mining.hardnet_loss(anchor, positive, labels, batch_reduce="MIN", anchor_swap=False)
    ref = reference.hardnet_loss(anchor, positive, labels, batch_reduce="MIN", anchor_swap=False)
    assert got.neg_index.tolist() == ref.neg_index.tolist()
    assert got.neg_count.tolist() == ref.neg_count.tolist()
    np.testing.assert_allclose(got.neg_dist, ref.neg_dist, rtol=1e-12)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=1e-10, atol=1e-14)
