"""MarginLoss: the core (bindings) against closed forms and against the NumPy reference given the same draws; the
rules of margin.hpp at their edges (no positive, no drawable negative, C = 0, non-finite input, bad arguments);
the gradients of the embedding and of beta against finite differences; planted bugs caught."""
import math

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference
from caffe_mining.losses.margin import MarginOptions
from caffe_mining.tolerances import TOLERANCES


def unit_rows(rng, n, dim):
    x = rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pk_batch(rng, classes, per_class, dim, spread=0.8):
    """P x K rows: each class around its own direction, L2-normalised; labels 0..P-1 (float64)."""
    labels = np.repeat(np.arange(classes), per_class)
    x = rng.normal(size=(classes, dim))[labels] + spread * rng.normal(size=(len(labels), dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels.astype(np.float64)


def assert_close(got, expected, dtype="float64", what=""):
    tol = TOLERANCES[dtype].core_vs_reference
    expected = np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=0, atol=tol.atol + tol.rtol * scale,
                               err_msg=what)


# ---------------------------------------------------------------------------------------------------------------
# Closed forms

SQ08, SQ2, SQ04 = math.sqrt(0.8), math.sqrt(2.0), math.sqrt(0.4)  # d01, d02, d12 below (before eps)
THREE = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # rows 0, 1 of class 0, row 2 of class 1


def test_three_points_by_hand():
    """Anchors 0 and 1 have one positive each and one negative (row 2); row 2 has no positive. beta = 0.5:
    t0 = (0, 1, 2): pos 0.8944 - 0.5 + 0.2 > 0, neg 0.5 - 1.4142 + 0.2 < 0; t1 = (1, 0, 2): pos the same,
    neg 0.5 - 0.6325 + 0.2 > 0. C = 3."""
    eps = 1e-8
    d01, d02, d12 = (math.sqrt(v * v + eps) for v in (SQ08, SQ2, SQ04))
    # d02 = 1.414 >= 1.4: DISTANCE_WEIGHTED at its default nonzero_loss_cutoff never draws row 2 for anchor 0.
    assert caffe_mining.margin_loss(THREE, [0, 0, 1]).triplets.tolist() == [[1, 0, 2]]
    for sampler, cutoff in (("UNIFORM", 1.4), ("DISTANCE_WEIGHTED", 1.5), ("DISTANCE_WEIGHTED", 0.0)):
        r = caffe_mining.margin_loss(THREE, [0, 0, 1], [0.5], sampler=sampler, nu=0.1, loss_weight=2.0,
                                     nonzero_loss_cutoff=cutoff)
        assert r.triplets.tolist() == [[0, 1, 2], [1, 0, 2]]
        assert r.hinge_count == 3
        expected = ((d01 - 0.3) + (d01 - 0.3) + (0.7 - d12) + 2 * 0.1 * 0.5) / 3
        assert r.loss == pytest.approx(expected, rel=1e-14)
        # dE/dbeta = (-1 + 0 + 0.1) + (-1 + 1 + 0.1) over C, times loss_weight 2
        assert r.grad_beta.tolist() == pytest.approx([2 * (-0.9 + 0.1) / 3], rel=1e-14)
        u01 = (THREE[0] - THREE[1]) / d01
        u12 = (THREE[1] - THREE[2]) / d12
        grad = 2 / 3 * np.array([2 * u01, -2 * u01 - u12, u12])  # pos pairs (0, 1) twice, neg pair (1, 2) once
        np.testing.assert_allclose(r.grad_embedding, grad, rtol=1e-13, atol=1e-15)
    assert d02 > 1.4


def test_no_active_hinge_gives_zero_loss_and_zero_gradients():
    """Row 2 on the far side of the circle (d = 1.79 and 2.0) with beta = 1.2: the positive hinges
    0.894 - 1.2 + 0.2 and both negative hinges are closed, C = 0 and E = 0 (no 0/0), nu's term included."""
    x = np.array([[1.0, 0.0], [0.6, 0.8], [-0.6, -0.8]])
    r = caffe_mining.margin_loss(x, [0, 0, 1], sampler="UNIFORM", nu=0.5)
    assert r.triplets.shape == (2, 3) and r.hinge_count == 0
    assert r.loss == 0.0 and not np.any(r.grad_embedding) and not np.any(r.grad_beta)


def test_anchors_without_positive_or_drawable_negative_give_no_triplet():
    rng = np.random.default_rng(1)
    x = unit_rows(rng, 7, 5)
    labels = np.array([0, 0, 0, 1, 1, 2, 3])  # rows 5 and 6 have no positive
    r = caffe_mining.margin_loss(x, labels, negatives_per_positive=2, seed=4)
    anchors = r.triplets[:, 0]
    assert not np.isin(anchors, [5, 6]).any()
    assert np.bincount(anchors, minlength=7)[:5].tolist() == [4, 4, 4, 2, 2]
    # Every negative of anchor 3 beyond nonzero_loss_cutoff: anchor 3 draws nothing (the MXNet code drew from all).
    far = x.copy()
    far[3] = -far[[0, 1, 2, 5, 6]].mean(axis=0)
    far[3] /= np.linalg.norm(far[3])
    far[4] = far[0] + 0.1 * far[4]  # near row 0: anchor 4 keeps a drawable negative
    far[4] /= np.linalg.norm(far[4])
    d = reference.margin_distance_matrix(far)
    tiny_cutoff = float(np.min(d[3, [0, 1, 2, 5, 6]])) - 1e-6
    assert d[4, 0] < tiny_cutoff
    r = caffe_mining.margin_loss(far, labels, nonzero_loss_cutoff=tiny_cutoff, seed=4)
    assert 3 not in r.triplets[:, 0] and 4 in r.triplets[:, 0]
    expected = reference.margin_triplets(far, labels, nonzero_loss_cutoff=tiny_cutoff, seed=4)
    assert r.triplets.tolist() == expected.tolist()


def test_negatives_are_of_another_class_and_never_the_anchor():
    rng = np.random.default_rng(2)
    x, labels = pk_batch(rng, 4, 4, 8)
    for sampler in ("DISTANCE_WEIGHTED", "UNIFORM"):
        r = caffe_mining.margin_loss(x, labels, negatives_per_positive=5, sampler=sampler, nonzero_loss_cutoff=0)
        a, p, n = r.triplets.T
        assert np.all(labels[a] == labels[p]) and np.all(a != p)
        assert np.all(labels[a] != labels[n])
        assert len(r.triplets) == 16 * 3 * 5  # every anchor, 3 positives, 5 draws


# ---------------------------------------------------------------------------------------------------------------
# The core against the reference (same seed and iteration: the same draws)

CASES = [
    dict(),
    dict(sampler="UNIFORM"),
    dict(negatives_per_positive=3, nu=0.05, margin=0.3, beta_init=0.9),
    dict(nonzero_loss_cutoff=0.0, cutoff=0.3),
    dict(num_classes=4, beta=[0.8, 1.0, 1.1, 1.3]),
    dict(seed=2**40 + 17, iteration=123456),
]


@pytest.mark.parametrize("dim", [2, 3, 16, 128])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_core_matches_reference_float64(case, dim):
    rng = np.random.default_rng(dim * 7 + len(case))
    x, labels = pk_batch(rng, 4, 3, dim, spread=1.5 if dim > 3 else 0.6)
    core = caffe_mining.margin_loss(x, labels, loss_weight=0.7, **case)
    ref = reference.margin_loss(x, labels, loss_weight=0.7, **case)
    assert core.triplets.tolist() == ref.triplets.tolist()
    assert len(core.triplets) > 0 and core.hinge_count == ref.hinge_count
    assert_close(core.loss, ref.loss, what="loss")
    assert_close(core.pos_dist, ref.pos_dist, what="pos_dist")
    assert_close(core.neg_dist, ref.neg_dist, what="neg_dist")
    assert_close(core.grad_embedding, ref.grad_embedding, what="grad_embedding")
    assert_close(core.grad_beta, ref.grad_beta, what="grad_beta")


@pytest.mark.parametrize("case", CASES[:4], ids=str)
def test_core_float32_matches_reference_given_its_triplets(case):
    """float32 distances differ from float64's in the last bits, so a draw at a boundary may differ: the reference
    is given the core's triplets, and they must be the float64 core's nearly always (checked on this batch)."""
    rng = np.random.default_rng(5)
    x, labels = pk_batch(rng, 5, 4, 32, spread=1.2)
    x32 = x.astype(np.float32)
    core = caffe_mining.margin_loss(x32, labels, **case)
    assert core.grad_embedding.dtype == np.float32 and core.grad_beta.dtype == np.float32
    assert core.triplets.tolist() == caffe_mining.margin_loss(x32.astype(np.float64), labels, **case).triplets.tolist()
    ref = reference.margin_loss(x32.astype(np.float64), labels, triplets=core.triplets, **case)
    assert_close(core.loss, ref.loss, "float32", "loss")
    assert_close(core.grad_embedding, ref.grad_embedding, "float32", "grad_embedding")
    assert_close(core.grad_beta, ref.grad_beta, "float32", "grad_beta")


def test_draws_follow_seed_and_iteration_only():
    rng = np.random.default_rng(6)
    x, labels = pk_batch(rng, 4, 4, 16, spread=1.5)
    base = caffe_mining.margin_loss(x, labels, seed=9, iteration=3).triplets
    assert caffe_mining.margin_loss(x, labels, seed=9, iteration=3).triplets.tolist() == base.tolist()
    assert caffe_mining.margin_loss(x.astype(np.float32), labels, seed=9, iteration=3).triplets.tolist() == \
        base.tolist()
    assert caffe_mining.margin_loss(x, labels, seed=9, iteration=4).triplets.tolist() != base.tolist()
    assert caffe_mining.margin_loss(x, labels, seed=10, iteration=3).triplets.tolist() != base.tolist()
    # 2^32 iterations wrap (the counter's word is 32 bits), a seed's high half is its own key word
    assert caffe_mining.margin_loss(x, labels, seed=9, iteration=3 + 2**32).triplets.tolist() == base.tolist()
    assert caffe_mining.margin_loss(x, labels, seed=9 + 2**32, iteration=3).triplets.tolist() != base.tolist()


def test_weights_do_not_underflow_at_high_dimension():
    """All rows about 1.3 apart (a shared component) except rows 0 and 2 (another class), 0.4 apart. At D = 2048 the
    log weight at d̂ = cutoff exceeds that at 1.3 by more than 745, so with one global maximum (the MXNet code's) the
    rows of anchors 1, 3, 4, 5 would be e^-745 and below: 0 in double. The per-row maximum keeps every anchor
    drawing, in float32 too (the weights are double whatever the features' type)."""
    dim = 2048
    rng = np.random.default_rng(3)
    shared = unit_rows(rng, 1, dim)[0]
    own = unit_rows(rng, 6, dim)
    x = np.sqrt(0.155) * shared + np.sqrt(0.845) * own
    x[2] = x[0] + 0.2 * own[2]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 2, 2])
    d = reference.margin_distance_matrix(x)
    assert d[0, 2] < 0.5 and 1.2 < np.min(d[4, :4]) and np.max(d[4, :4]) < 1.4
    log_w = -(dim - 2) * np.log(np.maximum(d, 0.5)) - (dim - 3) / 2 * np.log(1 - np.maximum(d, 0.5) ** 2 / 4)
    assert log_w[0, 2] - log_w[4, :4].max() > 746
    # Planted: the global maximum leaves those rows without a single non-zero weight.
    allowed = (labels[:, None] != labels[None, :]) & (d < 1.4)
    global_max = np.where(allowed, np.exp(log_w - log_w[allowed].max()), 0.0)
    assert [i for i in range(6) if global_max[i].sum() == 0] == [1, 3, 4, 5]
    for dtype in (np.float64, np.float32):
        r = caffe_mining.margin_loss(x.astype(dtype), labels, negatives_per_positive=4)
        assert np.bincount(r.triplets[:, 0], minlength=6).tolist() == [4] * 6


# ---------------------------------------------------------------------------------------------------------------
# Non-finite input and bad arguments

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_input_gives_nan_loss_no_triplet_and_nan_gradients(dtype):
    rng = np.random.default_rng(7)
    x, labels = pk_batch(rng, 3, 3, 4)
    bad = x.astype(dtype)
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"embedding holds a non-finite value \(nan\) at row 4"):
        caffe_mining.margin_loss(bad, labels)
    for embedding, beta in [(bad, None), (x.astype(dtype), [np.inf]), (x.astype(dtype) * 1e30 if dtype == np.float32
                                                                       else x * 1e300, None)]:
        r = caffe_mining.margin_loss(embedding, labels, beta, check_finite=False)
        assert math.isnan(r.loss) and r.triplets.shape == (0, 3) and r.hinge_count == 0
        assert np.all(np.isnan(r.grad_embedding)) and np.all(np.isnan(r.grad_beta))
    with pytest.raises(ValueError, match=r"beta holds a non-finite value \(inf\) at index 0"):
        caffe_mining.margin_loss(x, labels, [np.inf])


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin=-0.1), "margin must be >= 0. Got: -0.1"),
    (dict(nu=-1.0), "nu must be >= 0. Got: -1"),
    (dict(beta_init=float("nan")), "beta_init must be finite. Got: nan"),
    (dict(num_classes=-2), "num_classes must be >= 0. Got: -2"),
    (dict(negatives_per_positive=0), "negatives_per_positive must be >= 1. Got: 0"),
    (dict(cutoff=0.0), "cutoff must be > 0. Got: 0"),
    (dict(nonzero_loss_cutoff=float("inf")), "nonzero_loss_cutoff must be finite. Got: inf"),
    (dict(eps=0.0), "eps must be > 0. Got: 0"),
    (dict(sampler="HARD"), "sampler must be 'DISTANCE_WEIGHTED' or 'UNIFORM'. Got: 'HARD'"),
])
def test_bad_options_are_refused_with_the_same_words_everywhere(kwargs, message):
    x, labels = pk_batch(np.random.default_rng(8), 2, 2, 3)
    with pytest.raises(ValueError) as raised:
        caffe_mining.margin_loss(x, labels, **kwargs)
    assert str(raised.value) == message
    if "sampler" not in kwargs:
        with pytest.raises(ValueError) as raised:
            MarginOptions(**kwargs)
        assert str(raised.value) == message


def test_eps_that_rounds_to_zero_in_float32_is_refused_there_only():
    x, labels = pk_batch(np.random.default_rng(8), 2, 2, 3)
    caffe_mining.margin_loss(x, labels, eps=1e-50)
    with pytest.raises(ValueError, match="eps must stay > 0 and finite once rounded to float32"):
        caffe_mining.margin_loss(x.astype(np.float32), labels, eps=1e-50)


@pytest.mark.parametrize("labels, kwargs, message", [
    ([0, 0, 1.5, 1], {}, r"labels must be integer class ids. Got: labels\[2\] = 1.5"),
    ([0, 0, np.nan, 1], {}, r"labels must be integer class ids. Got: labels\[2\] = nan"),
    ([0, 0, 3, 1], dict(num_classes=3), r"labels must be integer class ids in \[0, num_classes = 3\)\. Got: "
                                        r"labels\[2\] = 3"),
    ([0, -1, 1, 1], dict(num_classes=3), r"labels\[1\] = -1"),
    ([0, 0, 1], {}, "labels must hold N = 4 values. Got: 3"),
])
def test_bad_labels_are_refused(labels, kwargs, message):
    x, _ = pk_batch(np.random.default_rng(8), 2, 2, 3)
    with pytest.raises(ValueError, match=message):
        caffe_mining.margin_loss(x, labels, **kwargs)


def test_beta_must_have_one_value_per_class():
    x, labels = pk_batch(np.random.default_rng(8), 2, 2, 3)
    with pytest.raises(ValueError, match=r"beta must hold max\(1, num_classes\) = 2 values. Got: 1"):
        caffe_mining.margin_loss(x, labels, [1.0], num_classes=2)
    r = caffe_mining.margin_loss(x, labels, num_classes=2, beta_init=0.7)
    assert r.grad_beta.shape == (2,)


def test_large_class_ids_stay_distinct_in_float32_without_num_classes():
    x, _ = pk_batch(np.random.default_rng(8), 2, 2, 3)
    labels = np.array([2**24, 2**24, 2**24 + 1, 2**24 + 1], dtype=np.int64)  # equal once rounded to float32
    r = caffe_mining.margin_loss(x.astype(np.float32), labels, sampler="UNIFORM")
    assert len(r.triplets) == 4 and np.all(r.triplets[:, 2] // 2 != r.triplets[:, 0] // 2)


# ---------------------------------------------------------------------------------------------------------------
# Gradients against finite differences (same seed, same samples), embedding and beta

def central_difference(f, x, k, h):
    plus, minus = x.copy(), x.copy()
    plus.flat[k] += h
    minus.flat[k] -= h
    return (f(plus) - f(minus)) / (2 * h), plus, minus


def finite_difference_errors(fn, x, labels, beta, h=1e-6, **kwargs):
    """Max |analytic - central difference| over the embedding's and beta's coordinates whose two steps keep the
    reference's pieces (triplets and hinge states): those that do not are across a kink or a draw."""
    base = fn(x, labels, beta, **kwargs)
    pieces = reference.margin_loss(x, labels, beta, **kwargs).pieces
    errors = {"embedding": 0.0, "beta": 0.0}
    checked = {"embedding": 0, "beta": 0}
    for name, value, grad in (("embedding", x, base.grad_embedding), ("beta", np.asarray(beta, float),
                                                                        base.grad_beta)):
        for k in range(value.size):
            def loss_at(v):
                args = (v, labels, beta) if name == "embedding" else (x, labels, v)
                return fn(*args, backward=False, **kwargs).loss
            estimate, plus, minus = central_difference(loss_at, value, k, h)
            moved = [reference.margin_loss(*((v, labels, beta) if name == "embedding" else (x, labels, v)),
                                           **kwargs).pieces for v in (plus, minus)]
            if all(m.shape == pieces.shape and np.array_equal(m, pieces) for m in moved):
                errors[name] = max(errors[name], abs(estimate - grad.flat[k]))
                checked[name] += 1
    return errors, checked


@pytest.mark.parametrize("kwargs", [dict(), dict(nu=0.3, negatives_per_positive=2), dict(sampler="UNIFORM"),
                                    dict(num_classes=3, nonzero_loss_cutoff=0.0)], ids=str)
def test_gradients_of_embedding_and_beta_match_finite_differences(kwargs):
    rng = np.random.default_rng(9)
    x, labels = pk_batch(rng, 3, 3, 4, spread=0.7)
    beta = np.linspace(0.9, 1.3, max(1, kwargs.get("num_classes", 0)))
    errors, checked = finite_difference_errors(caffe_mining.margin_loss, x, labels, beta, **kwargs)
    assert checked["embedding"] >= 30 and checked["beta"] == beta.size
    assert errors["embedding"] < 1e-8 and errors["beta"] < 1e-8, errors


def beta_sign_flipped(embedding, labels, beta=None, **kwargs):
    """Planted: the beta gradient with the wrong sign (the pull of the positive hinge taken as a push)."""
    result = caffe_mining.margin_loss(embedding, labels, beta, **kwargs)
    return result if result.grad_beta is None else result._replace(grad_beta=-result.grad_beta)


def test_planted_beta_sign_bug_is_caught():
    x, labels = pk_batch(np.random.default_rng(9), 3, 3, 4, spread=0.7)
    errors, _ = finite_difference_errors(beta_sign_flipped, x, labels, np.array([1.1]))
    assert errors["beta"] > 1e-2 and errors["embedding"] < 1e-8


# ---------------------------------------------------------------------------------------------------------------
# The sampler's rules at their exact edges

def core_negative_distance(x, labels, anchor, negative):
    """The core's own bits of d(anchor, negative), read from a UNIFORM draw that took that negative."""
    for seed in range(100):
        r = caffe_mining.margin_loss(x, labels, sampler="UNIFORM", seed=seed, backward=False)
        hit = (r.triplets[:, 0] == anchor) & (r.triplets[:, 2] == negative)
        if hit.any():
            return float(r.neg_dist[hit][0])
    raise AssertionError("never drawn")


def negatives_drawn(x, labels, anchor, seeds=40, **kwargs):
    drawn = set()
    for seed in range(seeds):
        t = caffe_mining.margin_loss(x, labels, seed=seed, backward=False, **kwargs).triplets
        drawn |= set(t[t[:, 0] == anchor][:, 2].tolist())
    return drawn


def test_a_negative_exactly_at_nonzero_loss_cutoff_is_never_drawn():
    """Weight 0 at d >= nonzero_loss_cutoff: the cutoff set to the core's own bits of d_02 excludes row 2 for
    anchor 0 (row 3 remains; row 4 is 2 away), the next double above them lets row 2 in."""
    x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, -0.8], [-1.0, 0.0]])
    labels = [0, 0, 1, 1, 2]
    d02 = core_negative_distance(x, labels, 0, 2)
    assert d02 == pytest.approx(math.sqrt(2.0), abs=1e-8)
    assert negatives_drawn(x, labels, 0, nonzero_loss_cutoff=d02) == {3}
    assert negatives_drawn(x, labels, 0, nonzero_loss_cutoff=float(np.nextafter(d02, 3.0))) == {2, 3}


def test_antipodal_negatives_keep_finite_weights():
    """x and -x are sqrt(4 + eps) > 2 apart, where 1 - d^2/4 < 0: the floor keeps the log finite, so with
    nonzero_loss_cutoff disabled every anchor still draws, and the antipodal negative (the largest 1/q) nearly
    always; the reference agrees draw for draw."""
    x = np.zeros((4, 8))
    x[0, 0], x[1, :2], x[2, 0], x[3, 2] = 1.0, (0.9, 0.1), -1.0, 1.0  # D = 8: 1/q grows as (1 - d^2/4)^-2.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 2])
    r = caffe_mining.margin_loss(x, labels, nonzero_loss_cutoff=0.0, negatives_per_positive=8)
    assert np.bincount(r.triplets[:, 0], minlength=4).tolist() == [8, 8, 0, 0]
    assert r.triplets[r.triplets[:, 0] == 0][:, 2].tolist() == [2] * 8
    ref = reference.margin_loss(x, labels, nonzero_loss_cutoff=0.0, negatives_per_positive=8)
    assert r.triplets.tolist() == ref.triplets.tolist() and np.isfinite(r.loss)
