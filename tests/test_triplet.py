"""TripletLoss: the reference against hand-computed decisions and values (small N, ties, thresholds), the empty
batches, the core (bindings) against the reference, and planted bugs of the issue that these tests catch."""
import dataclasses
import itertools

import numpy as np
import pytest

import caffe_mining
from caffe_mining import _core, reference
from caffe_mining.losses.triplet import MININGS, TripletOptions
from caffe_mining.tolerances import TOLERANCES

ALL_OPTIONS = [TripletOptions(margin=0.5, soft_margin=soft, squared=squared, mining=mining)
               for mining, soft, squared in itertools.product(MININGS, [False, True], [False, True])]
LOSSES = {"reference": reference.triplet_loss, "core": caffe_mining.triplet_loss}
TARGETS = [("reference", np.float64), ("core", np.float64), ("core", np.float32)]


def option_id(options):
    return f"{options.mining}-soft={options.soft_margin}-squared={options.squared}"


def column(values):
    """1-D points as an N x 1 embedding: small integers, so every norm, dot product and squared distance is exact
    in float32 and float64, and equal distances are bit-equal (ties)."""
    return np.asarray(values, dtype=np.float64)[:, None]


# ---------------------------------------------------------------------------------------------------------------
# Exact decisions at small N, ties included (hand-derived; each loss function must find them)

# Anchor 0 at 0: positives at distance 2 and 2 (rows 1, 2: tie -> 1), negatives at 3 and 3 (rows 3, 4: tie -> 3).
BATCH_HARD_POINTS = column([0, 2, -2, 3, -3])
BATCH_HARD_LABELS = np.array([0, 0, 0, 1, 1])
BATCH_HARD_TRIPLETS = [[0, 1, 3], [1, 2, 3], [2, 1, 4], [3, 4, 1], [4, 3, 2]]
# margin 0.2: max(0.2 + 2 - 3, 0) = 0, 0.2 + 4 - 1, 0.2 + 4 - 1, 0.2 + 6 - 1, 0.2 + 6 - 1: mean 16.8 / 5.
BATCH_HARD_LOSS = 16.8 / 5

# Semi-hard: pair (a, p) takes the closest negative strictly farther than D_ap, else the farthest negative.
SEMI_HARD_POINTS = column([0, 1, 3, 2, -4, 5, -2])
SEMI_HARD_LABELS = np.array([0, 0, 0, 1, 1, 1, 1])
SEMI_HARD_TRIPLETS = [
    [0, 1, 3],  # D_ap 1: negatives at 2 (rows 3 and 6, tie -> 3), 4, 5
    [0, 2, 4],  # D_ap 3: beyond it 4 (row 4) and 5 (row 5)
    [1, 0, 6],  # D_ap 1: row 3 is at exactly 1 (not beyond); then 3 (row 6), 4, 5
    [1, 2, 6],  # D_ap 2: beyond it 3 (row 6), 4, 5
    [2, 0, 6],  # D_ap 3: beyond it 5 (row 6) and 7 (row 4)
    [2, 1, 6],  # D_ap 2: row 5 at exactly 2 is not beyond
    [3, 4, 0],  # D_ap 6: no negative beyond (at 2, 1, 1): the farthest, row 0
    [3, 5, 0],
    [3, 6, 0],
    [4, 3, 2],  # anchor -4: negatives at 4, 5, 7; D_ap 6 -> row 2 (7)
    [4, 5, 2],  # D_ap 9: none beyond, the farthest (7, row 2)
    [4, 6, 0],  # D_ap 2: all beyond, the closest (4, row 0)
    [5, 3, 1],  # anchor 5: negatives at 5, 4, 2; D_ap 3 -> 4 (row 1)
    [5, 4, 0],  # D_ap 9: farthest, 5 (row 0)
    [5, 6, 0],  # D_ap 7: farthest
    [6, 3, 2],  # anchor -2: negatives at 2, 3, 5; D_ap 4 -> 5 (row 2)
    [6, 4, 1],  # D_ap 2: row 0 at exactly 2 is not beyond; 3 (row 1)
    [6, 5, 2],  # D_ap 7: farthest, 5 (row 2)
]

# Batch all, squared distances, margin 3: of the 8 terms two are active (anchor 2: 3 + 49 - 9, 3 + 49 - 4) and one
# sits exactly at the kink (anchor 1: 3 + 1 - 4 = 0, inactive). E = 91 / 2.
BATCH_ALL_POINTS = column([0, 1, 3, 10])
BATCH_ALL_LABELS = np.array([0, 0, 1, 1])
# dE/dx: anchor 2's terms (slope 1 each, / K = 2) through dD^2/dx = 2 (x_i - x_j).
BATCH_ALL_GRAD = column([3, 2, -19, 14])


@pytest.mark.parametrize("which, dtype", TARGETS)
@pytest.mark.parametrize("squared", [False, True])
def test_batch_hard_picks_farthest_positive_closest_negative_lowest_index(which, dtype, squared):
    result = LOSSES[which](BATCH_HARD_POINTS.astype(dtype), BATCH_HARD_LABELS, squared=squared)
    assert result.triplets.tolist() == BATCH_HARD_TRIPLETS
    assert result.terms == 5
    if not squared:
        assert result.loss == pytest.approx(BATCH_HARD_LOSS, rel=1e-6)


@pytest.mark.parametrize("which, dtype", TARGETS)
@pytest.mark.parametrize("squared", [False, True])
def test_semi_hard_picks_closest_beyond_else_farthest(which, dtype, squared):
    result = LOSSES[which](SEMI_HARD_POINTS.astype(dtype), SEMI_HARD_LABELS, mining="SEMI_HARD", squared=squared)
    assert result.triplets.tolist() == SEMI_HARD_TRIPLETS
    assert result.terms == len(SEMI_HARD_TRIPLETS)


@pytest.mark.parametrize("which, dtype", TARGETS)
def test_batch_all_mean_over_active_terms(which, dtype):
    result = LOSSES[which](BATCH_ALL_POINTS.astype(dtype), BATCH_ALL_LABELS, mining="BATCH_ALL", squared=True,
                           margin=3.0)
    assert result.terms == 2
    assert result.loss == 45.5
    np.testing.assert_array_equal(result.grad_embedding, BATCH_ALL_GRAD)
    assert result.triplets.shape == (0, 3)


@pytest.mark.parametrize("which", LOSSES)
def test_semi_hard_values_and_gradient_by_hand(which):
    """Three points, squared distances: pair (0, 1) at 1 has its negative at 4 (beyond), pair (1, 0) too; margin 4:
    each term 4 + 1 - 4 = 1 (anchor 0) and 4 + 1 - 9 < 0 (anchor 1, negative at 3 -> D 9)."""
    x = column([0, 1, -2])
    result = LOSSES[which](x, [0, 0, 1], mining="SEMI_HARD", squared=True, margin=4.0)
    assert result.triplets.tolist() == [[0, 1, 2], [1, 0, 2]]
    assert result.loss == 0.5
    # d/dx of (D01 - D02) / 2 = ((x0 - x1) - (x0 - x2), -(x0 - x1), (x0 - x2)) with dD/dx = 2 (x_i - x_j), / 2.
    np.testing.assert_array_equal(result.grad_embedding, column([-3, 1, 2]))


# ---------------------------------------------------------------------------------------------------------------
# Empty batches and anchors without a positive or a negative

EMPTY_BATCHES = {
    "one row": (column([1]), [0]),
    "one class": (column([0, 1, 3]), [2, 2, 2]),
    "all classes distinct": (column([0, 1, 3]), [0, 1, 2]),
}


@pytest.mark.parametrize("which", LOSSES)
@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
@pytest.mark.parametrize("batch", EMPTY_BATCHES)
def test_no_term_gives_zero_loss_and_zero_gradient(which, options, batch):
    x, labels = EMPTY_BATCHES[batch]
    result = LOSSES[which](x, labels, **options.loss_kwargs())
    assert result.loss == 0.0 and result.terms == 0
    assert np.all(result.grad_embedding == 0)
    if options.mining == "BATCH_HARD":
        assert np.all(result.triplets[:, 1:] == -1)
    if options.mining == "SEMI_HARD":
        assert np.all(result.triplets[:, 2] == -1)


@pytest.mark.parametrize("which", LOSSES)
@pytest.mark.parametrize("mining", ["BATCH_HARD", "SEMI_HARD"])
def test_anchor_without_positive_leaves_the_mean_and_pushes_nothing(which, mining):
    """Row 2 is alone in its class: as an anchor it gives no term (TF Addons' hard loss filled its missing positive
    with 0 and still pushed its negative away). Its only gradient is that of being the others' negative."""
    x, labels = column([0, 1, 2]), [0, 0, 1]
    with_singleton = LOSSES[which](x, labels, mining=mining, margin=5.0)
    assert with_singleton.terms == 2
    # The same two terms with row 2 as their negative: anchors 0 and 1 (margin 5, all hinges open).
    d = lambda i, j: np.sqrt((x[i, 0] - x[j, 0]) ** 2 + 1e-12)
    expected = ((5 + d(0, 1) - d(0, 2)) + (5 + d(1, 0) - d(1, 2))) / 2
    assert with_singleton.loss == pytest.approx(expected, rel=1e-12)
    if mining == "BATCH_HARD":
        assert with_singleton.triplets.tolist() == [[0, 1, 2], [1, 0, 2], [2, -1, -1]]
    # x2 is pulled only by d(0, 2) and d(1, 2), each -1/2: gradient -(1/2)(sign(x2 - x0) + sign(x2 - x1)) = -1.
    assert with_singleton.grad_embedding[2, 0] == pytest.approx(-1.0, rel=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("which", sorted(LOSSES))
def test_batch_all_soft_terms_that_underflow_to_zero_are_not_counted(which, dtype):
    """softplus(d_ap - d_an) is 0 in either type once d_an - d_ap > 746 (e^-746 underflows in float64): such terms
    are not active (K counts l > 0 as computed). Class 1 sits 2 and 3 away from class 0's anchors, class 2 a
    thousand away; 13 rows, so some negatives fall in the CPU's lanes and some in their tail."""
    positions = [0, 1, 2, 3] + [1000 + k for k in range(9)]
    labels = [0, 0, 1, 1] + [2] * 9
    x = column(positions).astype(dtype)
    result = LOSSES[which](x, labels, mining="BATCH_ALL", soft_margin=True)
    # Active: class 0's 2 ordered pairs x class 1's 2 rows and class 1's 2 pairs x class 0's 2 rows. Every term
    # with a negative across the gap (d_an - d_ap > 980) is 0, and so are class 2's 72 pairs x the 4 near rows.
    assert result.terms == 8
    assert result.loss > 0 and np.isfinite(result.loss)
    reference_result = reference.triplet_loss(x.astype(np.float64), labels, mining="BATCH_ALL", soft_margin=True)
    assert result.loss == pytest.approx(reference_result.loss, rel=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_semi_hard_pairs_of_an_anchor_without_negative_are_left_out(soft):
    """Anchors 0 and 1 share class 0 with no negative at all...: a batch where only class 1 has negatives."""
    x, labels = column([0, 1, 4, 6]), [0, 0, 1, 1]
    result = caffe_mining.triplet_loss(x, labels, mining="SEMI_HARD", soft_margin=soft)
    assert result.terms == 4 and np.isfinite(result.loss)


# ---------------------------------------------------------------------------------------------------------------
# Core against the reference

@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_core_matches_reference(options, dtype, seed):
    rng = np.random.default_rng(seed)
    n, dim = [(9, 3), (16, 5), (24, 8), (33, 4)][seed]
    inputs = caffe_mining.losses.triplet.draw_inputs(options, n, dim, rng)
    x, labels = inputs["embedding"].astype(dtype), inputs["label"]
    expected = reference.triplet_loss(x.astype(np.float64), labels, **options.loss_kwargs(), loss_weight=0.7)
    got = caffe_mining.triplet_loss(x, labels, **options.loss_kwargs(), loss_weight=0.7)
    assert got.grad_embedding.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.triplets, expected.triplets)
    assert got.terms == expected.terms
    tol = TOLERANCES[dtype].core_vs_reference
    assert abs(got.loss - expected.loss) <= tol.atol + tol.rtol * abs(expected.loss)
    scale = np.abs(expected.grad_embedding).max()
    np.testing.assert_allclose(got.grad_embedding, expected.grad_embedding, rtol=0, atol=tol.atol + tol.rtol * scale)


def test_caffe_shaped_input_and_loss_weight():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    flat = caffe_mining.triplet_loss(x, labels, loss_weight=2.5)
    four_d = caffe_mining.triplet_loss(x[:, :, None, None], labels.astype(np.float32))
    assert four_d.grad_embedding.shape == (10, 4, 1, 1)
    np.testing.assert_allclose(flat.grad_embedding, 2.5 * four_d.grad_embedding[:, :, 0, 0], rtol=1e-14)
    assert caffe_mining.triplet_loss(x, labels, backward=False).grad_embedding is None


def test_identical_embeddings_give_finite_gradients():
    """Distance 0 between a positive pair: eps keeps 1/D finite and the numerator x_i - x_j is 0."""
    x = column([1, 1, 3])
    for options in ALL_OPTIONS:
        result = caffe_mining.triplet_loss(x, [0, 0, 1], **options.loss_kwargs())
        assert np.all(np.isfinite(result.grad_embedding)) and np.isfinite(result.loss)


# ---------------------------------------------------------------------------------------------------------------
# Bad input and options

def test_non_finite_features():
    x = column([0, 1, 3])
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"embedding holds a non-finite value \(nan\) at row 1"):
        caffe_mining.triplet_loss(x, [0, 0, 1])
    for mining in MININGS:
        result = caffe_mining.triplet_loss(x, [0, 0, 1], mining=mining, check_finite=False)
        assert np.isnan(result.loss) and result.terms == -1 and np.all(np.isnan(result.grad_embedding))
        assert np.all(result.triplets[:, 2] == -1)
    # |x|^2 overflows float32 (1e40), or each |x|^2 is finite (2.25e38) but a squared distance could overflow.
    for huge in (column([0, 1e20, 3]), column([1.5e19, -1.5e19, 0])):
        result = caffe_mining.triplet_loss(huge.astype(np.float32), [0, 0, 1], check_finite=False)
        assert np.isnan(result.loss) and result.terms == -1 and np.all(np.isnan(result.grad_embedding))


@pytest.mark.parametrize("labels, message", [
    ([0, 0.5, 1], r"labels must be finite integer class ids. Got: labels\[1\] = 0.5"),
    ([0, np.nan, 1], r"labels\[1\] = nan"),
    ([0, 1], r"labels must hold N = 3 values. Got: 2"),
])
def test_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        caffe_mining.triplet_loss(column([0, 1, 3]), labels)


def test_large_integer_labels_stay_distinct_in_float32():
    labels = np.array([2**40, 2**40 + 1, 2**40], dtype=np.int64)  # one float32 value, two classes
    result = caffe_mining.triplet_loss(column([0, 1, 3]).astype(np.float32), labels)
    assert result.triplets.tolist() == [[0, 2, 1], [1, -1, -1], [2, 0, 1]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin=-0.1), r"margin must be >= 0. Got: -0.1"),
    (dict(eps=0.0), r"eps must be > 0. Got: 0"),
    (dict(eps=1e-50), r"eps must stay > 0 and finite once rounded to float32"),
    (dict(mining="HARDEST"), r"mining must be one of BATCH_HARD, BATCH_ALL, SEMI_HARD. Got: 'HARDEST'"),
])
def test_bad_options_are_refused_alike(kwargs, message):
    x = column([0, 1, 3]).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        caffe_mining.triplet_loss(x, [0, 0, 1], **kwargs)
    if "float32" not in message:  # the options are checked in float64; float32 at call time
        with pytest.raises(ValueError, match=message):
            TripletOptions(**kwargs)


def test_options_problem_names_the_dtype():
    assert _core.triplet_options_problem(eps=1e-50, dtype="float64") == ""
    assert "float32" in _core.triplet_options_problem(eps=1e-50, dtype="float32")


# ---------------------------------------------------------------------------------------------------------------
# Planted bugs (the issue's): each, as a variant of the reference, fails the tests above

def positive_by_min(embedding, labels, **kwargs):
    """BATCH_HARD with the closest positive instead of the farthest (the hinge's sign kept)."""
    x = np.asarray(embedding, np.float64)
    y = np.asarray(labels)
    d = reference.triplet_distance_matrix(x, kwargs.get("eps", 1e-12), kwargs.get("squared", False))
    rows = []
    for a in range(len(x)):
        pos = [j for j in range(len(x)) if j != a and y[j] == y[a]]
        neg = [j for j in range(len(x)) if y[j] != y[a]]
        if pos and neg:
            rows.append([a, min(pos, key=lambda j: (d[a, j], j)), min(neg, key=lambda j: (d[a, j], j))])
        else:
            rows.append([a, -1, -1])
    return np.array(rows)


def semi_hard_fallback_hardest(embedding, labels, **kwargs):
    """SEMI_HARD whose fallback (no negative beyond D_ap) is the closest negative instead of the farthest."""
    x = np.asarray(embedding, np.float64)
    y = np.asarray(labels)
    d = reference.triplet_distance_matrix(x, kwargs.get("eps", 1e-12), kwargs.get("squared", False))
    rows = []
    for a in range(len(x)):
        neg = [j for j in range(len(x)) if y[j] != y[a]]
        for p in range(len(x)):
            if p == a or y[p] != y[a]:
                continue
            beyond = [j for j in neg if d[a, j] > d[a, p]]
            pick = min(beyond or neg, key=lambda j: (d[a, j], j)) if neg else -1
            rows.append([a, p, pick])
    return np.array(rows)


def batch_all_mean_over_all(embedding, labels, margin=0.2, squared=False, **kwargs):
    """BATCH_ALL averaged over every triplet instead of over the active ones."""
    x = np.asarray(embedding, np.float64)
    y = np.asarray(labels)
    d = reference.triplet_distance_matrix(x, 1e-12, squared)
    terms = [max(margin + d[a, p] - d[a, k], 0.0) for a, p, k in itertools.product(range(len(x)), repeat=3)
             if p != a and y[p] == y[a] and y[k] != y[a]]
    return sum(terms) / len(terms)


def test_planted_positive_by_min_is_caught():
    planted = positive_by_min(BATCH_HARD_POINTS, BATCH_HARD_LABELS)
    assert planted.tolist() != BATCH_HARD_TRIPLETS
    # and it is the positive column that differs
    assert any(p != q for p, q in zip(planted[:, 1], np.array(BATCH_HARD_TRIPLETS)[:, 1]))


def test_planted_semi_hard_fallback_to_hardest_is_caught():
    planted = semi_hard_fallback_hardest(SEMI_HARD_POINTS, SEMI_HARD_LABELS)
    assert planted.tolist() != SEMI_HARD_TRIPLETS
    differing = [row for row, ok in zip(planted.tolist(), SEMI_HARD_TRIPLETS) if row != ok]
    assert [3, 4, 1] in differing  # anchor 3 at 2: no negative beyond 6, the farthest is row 0, not row 1


def test_planted_batch_all_mean_over_all_terms_is_caught():
    planted = batch_all_mean_over_all(BATCH_ALL_POINTS, BATCH_ALL_LABELS, margin=3.0, squared=True)
    assert planted == 91 / 8 != 45.5
