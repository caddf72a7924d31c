"""The core (bindings) at the exact boundaries of the headers' rules, where random inputs never land: a hinge at
exactly zero, a distance exactly equal to the duplicate threshold (in the general path, in the row-by-row path's
4-lane groups and in its scalar tail), exact ties with anchor swap, a NaN among several pairs of one kind, empty
and non-empty rows in one batch, and descriptors whose rounded squared distance goes negative. They kill mutants of
tests/mutation that the rest of the tests let through (the mutants' ids are named in the docstrings)."""
import itertools

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference
from caffe_mining.options import BATCH_REDUCES, LOSS_TYPES

DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------------------------------------------
# MiningContrastiveLoss

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("margin, offset", [(1.0, [1.0, 0.0]), (2.0, [1.0, 1.0]), (0.25, [0.5, 0.0])])
def test_legacy_dissimilar_pair_exactly_at_the_hinge_gets_no_gradient(dtype, margin, offset):
    """d^2 = m exactly (offsets whose squared norm is exact): cost 0 and gradient 0, as for d^2 > m
    (mutant legacy_backward_hinge_inclusive)."""
    a = np.array([offset, [0.3, 0.0], [0.0, 2.0]], dtype)
    b = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype)
    sim = [0, 1, 0]
    core = caffe_mining.mining_contrastive_loss(a, b, sim, margin=margin, legacy_version=True)
    assert core.cost[0] == 0.0 and core.picked.all()
    assert not core.grad_feat[0].any() and not core.grad_feat_p[0].any()
    assert core.grad_feat[1].any()  # the similar pair still pulls
    ref = reference.mining_contrastive_loss(a.astype(np.float64), b.astype(np.float64), sim, margin=margin,
                                            legacy_version=True)
    assert not ref.grad_feat[0].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_among_several_similar_pairs_is_mined_as_the_hardest(dtype):
    """Four similar pairs, one of them NaN (at index 1, then 3), and K = 2, so one similar pick: a NaN cost ranks
    hardest, so the NaN pair wins it over the finite ones and the loss is NaN (mutants hardness_key_nan_easiest_*;
    with K = 1 and the NaN pair alone of its kind, any ranking picks it)."""
    a = np.array([[0.4, 0.0], [np.nan, 0.0], [0.9, 0.0], [0.7, 0.0],
                  [0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [0.5, 0.0]], dtype)
    b = np.zeros_like(a)
    sim = [1, 1, 1, 1, 0, 0, 0, 0]
    for nan_row in (1, 3):
        a_nan = a.copy()
        a_nan[1] = a[3]
        a_nan[nan_row, 0] = np.nan
        core = caffe_mining.mining_contrastive_loss(a_nan, b, sim, mining_ratio=4, check_finite=False)
        assert np.isnan(core.loss)
        # Today the NaN pair is picked; with a policy that skips the mining on non-finite input nothing is.
        assert core.picked[nan_row] or not core.picked.any()


# ---------------------------------------------------------------------------------------------------------------
# HardNetLoss: the duplicate threshold, exactly

def general_path_options():
    """Every option set that reads the whole distance matrix (all but MIN without anchor swap)."""
    return [(br, swap) for br, swap in itertools.product(BATCH_REDUCES, [False, True]) if (br, swap) != ("MIN", False)]


def same_results(got, expected):
    assert got.neg_count.tolist() == expected.neg_count.tolist()
    assert got.neg_index.tolist() == expected.neg_index.tolist()
    assert got.neg_swapped.tolist() == expected.neg_swapped.tolist()
    assert got.loss == expected.loss
    np.testing.assert_array_equal(got.grad_anchor, expected.grad_anchor)
    np.testing.assert_array_equal(got.grad_positive, expected.grad_positive)


def differ(got, expected):
    return (got.neg_count.tolist() != expected.neg_count.tolist() or got.neg_index.tolist() != expected.neg_index.tolist()
            or got.neg_swapped.tolist() != expected.neg_swapped.tolist() or got.loss != expected.loss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_reduce, anchor_swap", general_path_options())
def test_threshold_equal_to_a_reported_distance_keeps_that_negative(dtype, batch_reduce, anchor_swap, rng):
    """The threshold set to the smallest candidate value the core reported: D < threshold is false for it, so
    every decision, the loss and the gradients are those of the default threshold (no distance lies between);
    RANDOM draws every rank in turn, so that the smallest candidate is drawn too (mutant duplicate_test_inclusive)."""
    n, dim = 9, 4
    a = (rng.normal(size=(n, dim)) / np.sqrt(dim)).astype(dtype)
    p = (a + 0.5 * rng.normal(size=(n, dim)) / np.sqrt(dim)).astype(dtype)
    draws = [[(rank + 0.5) / (n - 1)] * n for rank in range(n - 1)] if batch_reduce == "RANDOM" else [None]
    smallest = caffe_mining.hardnet_loss(a, p, batch_reduce="AVERAGE", anchor_swap=anchor_swap)
    threshold = dtype(np.min(smallest.neg_dist))  # the hardest candidate's value, as the core computed it
    assert threshold > 0.008
    moved = []
    for uniforms in draws:
        kwargs = dict(batch_reduce=batch_reduce, anchor_swap=anchor_swap, uniforms=uniforms, loss_type="SOFTMAX")
        default = caffe_mining.hardnet_loss(a, p, **kwargs)
        same_results(caffe_mining.hardnet_loss(a, p, duplicate_threshold=float(threshold), **kwargs), default)
        just_above = float(np.nextafter(threshold, dtype(1)))
        moved.append(differ(caffe_mining.hardnet_loss(a, p, duplicate_threshold=just_above, **kwargs), default))
    assert any(moved)  # one ulp higher, that candidate is a duplicate: the bound is where the rule puts it


def smallest_preimage(start, dtype):
    """(p, d): the first p >= start whose x = p*p + eps (what the core computes against a zero anchor) is the
    smallest x with sqrt(x) = d, so that the row-by-row path's squared threshold for d is exactly this x."""
    p = dtype(start)
    eps = dtype(1e-6)
    for _ in range(100000):
        x = (p * p - dtype(2) * (dtype(0) * p)) + eps
        d = np.sqrt(x)
        if np.sqrt(np.nextafter(x, dtype(0))) < d:
            return p, d
        p = np.nextafter(p, dtype(1))
    raise AssertionError(f"no smallest preimage within 100000 steps of {start}")


# Column of the exact-threshold positive: (n, column) in a full 4-lane group, in the float path's scalar tail after
# full groups (n = 14: lanes 0-11, tail 12-13), and in a last block of 3 columns (n = 131: 128-130, all tail).
@pytest.mark.parametrize("n, column", [(14, 4), (14, 12), (14, 13), (131, 129), (131, 50)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_by_row_threshold_equal_to_a_distance_at_every_column_position(n, column, dtype):
    """MIN without anchor swap mines on x = D^2 rounded; with the threshold equal to a D whose x is the smallest of
    its root, that column is a valid negative and the hardest (mutants row_valid_threshold_inclusive in the scalar
    code, lanes_threshold_inclusive in the SSE lanes)."""
    rng = np.random.default_rng(n + column)
    p_star, d_star = smallest_preimage(0.55, dtype)
    positive = rng.permutation(np.linspace(0.8, 0.95, n)).astype(dtype)
    positive[column] = p_star
    anchor = np.zeros((n, 1), dtype)
    got = caffe_mining.hardnet_loss(anchor, positive[:, None], batch_reduce="MIN", anchor_swap=False,
                                    duplicate_threshold=float(d_star))
    others = [i for i in range(n) if i != column]
    assert got.neg_count[others].tolist() == [n - 1] * (n - 1)
    assert got.neg_index[others].tolist() == [column] * (n - 1)
    assert got.neg_dist[0 if column else 1] == d_star  # the core itself reports that distance
    below = caffe_mining.hardnet_loss(anchor, positive[:, None], batch_reduce="MIN", anchor_swap=False,
                                      duplicate_threshold=float(np.nextafter(d_star, dtype(1))))
    assert below.neg_count[others].tolist() == [n - 2] * (n - 1)


# ---------------------------------------------------------------------------------------------------------------
# HardNetLoss: exact ties, empty rows, kinks, rounding

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_reduce", BATCH_REDUCES)
def test_exact_ties_with_anchor_swap_go_to_the_lowest_j_and_keep_d_ij(dtype, batch_reduce):
    """eye(4) against 1.1 eye(4): every D_ij and D_ji (i != j) is the same number, so with anchor swap the chosen
    (or hardest) candidate is the lowest j and its value is D_ij, not swapped (mutants hardnet_harder_tie_high,
    swap_at_equal_value)."""
    a, p = np.eye(4, dtype=dtype), (1.1 * np.eye(4)).astype(dtype)
    kwargs = dict(batch_reduce=batch_reduce, anchor_swap=True, uniforms=[0.0, 0.0, 0.0, 0.0])
    got = caffe_mining.hardnet_loss(a, p, **kwargs)
    assert got.neg_index.tolist() == [1, 0, 0, 0]
    assert not got.neg_swapped.any()
    ref = reference.hardnet_loss(a.astype(np.float64), p.astype(np.float64), **kwargs)
    assert ref.neg_index.tolist() == [1, 0, 0, 0] and not ref.neg_swapped.any()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=rtol, atol=rtol * 1e-2)


def mixed_rows():
    """Row 0 has no valid negative, with or without anchor swap (its only other-label candidate, 2, is a duplicate
    both ways); rows 1 to 3 have some."""
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.3], [1.0, 1.0]])
    p = np.array([[0.0, 0.3], [1.0, 0.4], [0.0, 0.0], [1.2, 1.0]])  # a_2 = p_0 and p_2 = a_0: D_02 = D_20 = sqrt(eps)
    return a, p, np.array([0, 0, 1, 0], np.float64)


@pytest.mark.parametrize("batch_reduce, loss_type, anchor_swap",
                         list(itertools.product(BATCH_REDUCES, LOSS_TYPES, [False, True])))
def test_empty_and_non_empty_rows_in_one_batch(batch_reduce, loss_type, anchor_swap):
    """The mean runs over the non-empty rows only, forward and backward, on the core (mutants
    forward_mean_counts_empty_rows, backward_scale_over_n)."""
    a, p, labels = mixed_rows()
    kwargs = dict(batch_reduce=batch_reduce, loss_type=loss_type, anchor_swap=anchor_swap, uniforms=[0.3] * 4,
                  loss_weight=0.8)
    got = caffe_mining.hardnet_loss(a, p, labels, **kwargs)
    ref = reference.hardnet_loss(a, p, labels, **kwargs)
    empty = got.neg_count == 0
    assert empty.any() and not empty.all()
    assert got.neg_count.tolist() == ref.neg_count.tolist() and got.neg_index.tolist() == ref.neg_index.tolist()
    dist = reference.hardnet_distance_matrix(a, p)
    row_losses = []
    for i in np.flatnonzero(~empty):
        j, swapped = ref.neg_index[i], ref.neg_swapped[i]
        if batch_reduce != "AVERAGE":
            row_losses.append(row_loss(loss_type, dist[i, i], dist[j, i] if swapped else dist[i, j]))
    if batch_reduce != "AVERAGE":
        assert got.loss == pytest.approx(np.mean(row_losses), rel=1e-12)  # R = 3, not 4
    assert got.loss == pytest.approx(ref.loss, rel=1e-12)
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=1e-10, atol=1e-14)


def row_loss(loss_type, pos, neg, margin=1.0):
    if loss_type == "TRIPLET_MARGIN":
        return max(margin + pos - neg, 0.0)
    if loss_type == "SOFTMAX":
        return float(np.logaddexp(0.0, pos - neg))
    return max(margin - neg, 0.0) + pos


# 1-D values with eps = 9/16: D = 5/4 for |a - p| = 1 and D = 37/16 for |a - p| = 35/16, exact in any dtype
# ((37/16)^2 - (35/16)^2 = 9/16), so margin 17/16 puts TRIPLET_MARGIN's hinge, and margin 37/16 CONTRASTIVE's,
# exactly at its kink, with a_0 != p_0 so that the positive's gradient term does not vanish by itself.
KINK_EPS = 9.0 / 16.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_reduce", BATCH_REDUCES)
@pytest.mark.parametrize("loss_type, margin", [("TRIPLET_MARGIN", 17 / 16), ("CONTRASTIVE", 37 / 16)])
def test_hinge_exactly_at_its_kink_has_zero_gradient(dtype, batch_reduce, loss_type, margin):
    """margin + pos - neg = 0 (TRIPLET_MARGIN) or margin - neg = 0 (CONTRASTIVE) exactly: the hinge's derivative
    is 0 there (mutants triplet_dpos_at_kink, triplet_dneg_at_kink, contrastive_dneg_at_kink)."""
    a = np.array([[0.0], [4.0]], dtype)
    p = np.array([[1.0], [35 / 16]], dtype)  # row 0: D_00 = 5/4, D_01 = 37/16; row 1: D_11 ~ 1.96, D_10 ~ 3.09
    got = caffe_mining.hardnet_loss(a, p, margin=margin, loss_type=loss_type, batch_reduce=batch_reduce,
                                    eps=KINK_EPS, uniforms=[0.0, 0.0])
    assert got.pos_dist[0] == 1.25 and got.neg_dist[0] == 37 / 16 and got.neg_index[0] == 1
    ref = reference.hardnet_loss(a.astype(np.float64), p.astype(np.float64), margin=margin, loss_type=loss_type,
                                 batch_reduce=batch_reduce, eps=KINK_EPS, uniforms=[0.0, 0.0])
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert got.loss == pytest.approx(ref.loss, rel=rtol, abs=1e-7)
    np.testing.assert_allclose(got.grad_anchor, ref.grad_anchor, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(got.grad_positive, ref.grad_positive, rtol=rtol, atol=1e-7)
    # By hand (R = 2): a_0 enters D_00 and D_01 only. TRIPLET_MARGIN: both rows' hinges give 0 (row 0 at its kink,
    # row 1 inactive: 17/16 + 1.96 - 3.09 < 0). CONTRASTIVE: D_00's term 1/2 (a_0 - p_0)/D_00 = -0.4, D_01's 0.
    if loss_type == "TRIPLET_MARGIN":
        assert got.loss == 0.0 and not got.grad_anchor.any() and not got.grad_positive.any()
    else:
        assert got.grad_anchor[0, 0] == pytest.approx(-0.4, rel=rtol)


@pytest.mark.parametrize("batch_reduce, anchor_swap", [("MIN", False), ("MIN", True), ("AVERAGE", False)])
def test_rounding_negative_squared_distance_is_clamped(batch_reduce, anchor_swap, rng):
    """a = p with norms ~1e3 in float32: |a|^2 + |p|^2 - 2 a.p rounds to about +-0.1, far beyond eps, half of the
    time negative; clamped at 0 every D_ii is sqrt(eps) (mutants distances_unclamped, squared_distance_unclamped)."""
    a = (rng.normal(size=(16, 8)) * 400).astype(np.float32)
    got = caffe_mining.hardnet_loss(a, a.copy(), batch_reduce=batch_reduce, anchor_swap=anchor_swap)
    sq = np.sum(a * a, axis=1) + np.sum(a * a, axis=1) - 2 * np.einsum("ij,ij->i", a, a)
    assert np.all(np.isfinite(got.pos_dist))
    assert np.all(got.pos_dist >= np.sqrt(np.float32(1e-6)))
    assert np.all(got.pos_dist <= np.sqrt(np.maximum(sq, 0) + 1e-6) + 1.0)  # rounding of the core's own GEMM
