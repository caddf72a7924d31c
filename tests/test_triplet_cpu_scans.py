"""TripletLoss's CPU fast paths (triplet.cpp: lane scans for the picks, BATCH_ALL's lanes, sparse S) decide as
the definitions: exact ties to the lowest index in any lane or the tail, SEMI_HARD's strict "farther than" at
d_an == d_ap, BATCH_ALL's count at m + d_ap == d_an, against the NumPy reference (written from the definitions).

Small-integer coordinates keep every distance exact in float32 and float64, so equal distances are bit-equal (ties)
and thresholds are hit exactly. Sizes cover several lane vectors (4 floats, 2 doubles a vector) and the tail."""
import itertools

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference
from caffe_mining.losses.triplet import MININGS
from caffe_mining.tolerances import TOLERANCES

SIZES = [5, 8, 13, 19, 31, 64, 70]


def integer_batch(n, seed, rows_per_class):
    """n distinct points of {-2..2}^3 (distinct: coincident rows have D = sqrt(eps) and a gradient that float32
    cannot resolve against the reference, a matter of precision, not of decisions)."""
    rng = np.random.default_rng(seed)
    grid = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.float64)
    x = grid[rng.choice(len(grid), size=n, replace=False)]
    labels = rng.permutation(np.arange(n) // rows_per_class).astype(np.float64)
    return x, labels


def assert_core_decides_as_reference(x, labels, dtype, loss_weight=0.7, **options):
    expected = reference.triplet_loss(x, labels, loss_weight=loss_weight, **options)
    got = caffe_mining.triplet_loss(x.astype(dtype), labels, loss_weight=loss_weight, **options)
    np.testing.assert_array_equal(got.triplets, expected.triplets)
    assert got.terms == expected.terms
    tol = TOLERANCES[np.dtype(dtype).name].core_vs_reference
    assert abs(got.loss - expected.loss) <= tol.atol + tol.rtol * abs(expected.loss)
    scale = max(np.abs(expected.grad_embedding).max(), 1.0)
    np.testing.assert_allclose(got.grad_embedding, expected.grad_embedding, rtol=0, atol=tol.atol + tol.rtol * scale)
    return got


@pytest.mark.parametrize("mining, soft, squared", list(itertools.product(MININGS, [False, True], [False, True])))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_ties_and_thresholds_decide_as_the_definition(mining, soft, squared, dtype, n):
    # dim 3, 5 values a coordinate: many rows share a distance; margin 1 with squared (integer) distances puts
    # BATCH_ALL terms exactly at the kink. With roots, eps moves sqrt(4 + eps) off 2 in float64 but not in float32:
    # margin 0.5 there, which no two roots of integers are apart. The loss weight's sign alternates (S's zeros
    # carry it).
    x, labels = integer_batch(n, seed=n, rows_per_class=1 + n % 5)
    margin = 1.0 if squared else 0.5
    assert_core_decides_as_reference(x, labels, dtype, loss_weight=-0.7 if n % 2 else 0.7, margin=margin,
                                     soft_margin=soft, squared=squared, mining=mining)


def one_anchor_line(negatives, positive=2.0):
    """Row 0 (label 0) at 0, row 1 (label 0) at `positive`, then negatives (label 1) at the given positions."""
    x = np.array([0.0, positive, *negatives])[:, None]
    labels = np.array([0, 0] + [1] * len(negatives), dtype=np.float64)
    return x, labels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_semi_hard_equal_distance_is_not_beyond_and_ties_go_low_across_lanes(dtype):
    # Anchor 0's positive at distance 2. Negatives at exactly 2 (rows 4, 9: not beyond), at 3 in rows 8 (lane 2 of
    # the third float vector), 11 and 20 (the tail of 21 rows), the rest at 5: the pick is row 8.
    negatives = [5.0] * 19
    for row, position in ((4, 2.0), (9, -2.0), (8, 3.0), (11, -3.0), (20, 3.0)):
        negatives[row - 2] = position
    x, labels = one_anchor_line(negatives)
    got = assert_core_decides_as_reference(x, labels, dtype, mining="SEMI_HARD")
    assert [0, 1, 8] in got.triplets.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_semi_hard_fallback_farthest_ties_go_low(dtype):
    # No negative beyond the positive's 9: the farthest, at 7 in rows 13 and 6 (and the tail's 22) -> row 6.
    negatives = [1.0] * 21
    for row, position in ((13, 7.0), (6, -7.0), (22, 7.0)):
        negatives[row - 2] = position
    x, labels = one_anchor_line(negatives, positive=9.0)
    got = assert_core_decides_as_reference(x, labels, dtype, mining="SEMI_HARD")
    assert [0, 1, 6] in got.triplets.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_hard_ties_go_low_across_lanes_and_tail(dtype):
    # Anchor 0: closest negatives at 1 in rows 7, 3 and 18 (tail of 19 rows) -> 3; its positive is row 1.
    negatives = [4.0] * 17
    for row, position in ((7, 1.0), (3, -1.0), (18, 1.0)):
        negatives[row - 2] = position
    x, labels = one_anchor_line(negatives)
    got = assert_core_decides_as_reference(x, labels, dtype, mining="BATCH_HARD")
    assert got.triplets.tolist()[0] == [0, 1, 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_all_term_at_the_kink_is_not_counted(dtype):
    # Squared distances, margin 3: anchor 0 (positive at 1: d_ap 1) against negatives at d_an 4 (the kink: 3 + 1
    # - 4 = 0), 1 and 9 across lanes and the tail.
    negatives = [3.0] * 17
    negatives[5] = 2.0   # d_an 4: exactly at the kink
    negatives[16] = -2.0  # the tail, at the kink too
    negatives[9] = 1.0   # d_an 1: open (3 + 1 - 1 = 3)
    x, labels = one_anchor_line(negatives, positive=1.0)
    got = assert_core_decides_as_reference(x, labels, dtype, mining="BATCH_ALL", margin=3.0, squared=True)
    assert got.terms == reference.triplet_loss(x, labels, mining="BATCH_ALL", margin=3.0, squared=True).terms
