"""caffe_mining._core (the C++ core through pybind11) against the NumPy reference, and its argument checks."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import caffe_mining
from caffe_mining import _core, reference
from caffe_mining.options import BATCH_REDUCES, LOSS_TYPES
from caffe_mining.tolerances import TOLERANCES


examples = settings(max_examples=60, deadline=None, derandomize=True)


def assert_close(got, expected, dtype):
    """Elementwise, with the absolute slack scaled by the array's largest value: float32 rounding of a distance is
    relative to the operands of its cancellation, not to the (possibly tiny) result."""
    tol = TOLERANCES[np.dtype(dtype).name].core_vs_reference
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=tol.rtol, atol=tol.atol + tol.rtol * scale)


def contrastive_inputs(seed, n, dim, dtype, ties):
    rng = np.random.default_rng(seed)
    scale = 0.8 / np.sqrt(2 * dim)  # distances around the margin: both hinge states
    a, b = rng.normal(size=(n, dim)) * scale, rng.normal(size=(n, dim)) * scale
    if ties:  # copies of pair 0: exactly equal costs in any implementation
        a[: n // 2], b[: n // 2] = a[0], b[0]
    sim = rng.integers(0, 2, size=n).astype(np.float64)
    return a.astype(dtype), b.astype(dtype), sim


def selection_is_robust(a, b, sim, margin, legacy, ratio, dtype):
    """float32: the core's decisions can only be compared where no two costs of a kind are within float32 rounding
    of each other (otherwise either choice is right); exact ties (copied pairs) are fine: both break them by index."""
    if dtype == np.float64:
        return True
    r = reference.mining_contrastive_loss(a, b, sim, margin=margin, legacy_version=legacy, mining_ratio=ratio)
    for kind in (0, 1):
        costs = np.sort(r.cost[sim == kind])
        gaps = np.diff(costs)
        if np.any((gaps > 0) & (gaps < 1e-4 * max(1.0, costs[-1] if costs.size else 0.0))):
            return False
    return True


@examples
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 24), dim=st.integers(1, 6), ratio=st.integers(1, 9),
       legacy=st.booleans(), margin=st.sampled_from([0.5, 1.0, 2.0]), ties=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), loss_weight=st.sampled_from([1.0, 0.25, -2.0]))
def test_contrastive_matches_reference(seed, n, dim, ratio, legacy, margin, ties, dtype, loss_weight):
    a, b, sim = contrastive_inputs(seed, n, dim, dtype, ties)
    core = caffe_mining.mining_contrastive_loss(a, b, sim, margin=margin, legacy_version=legacy, mining_ratio=ratio,
                                                loss_weight=loss_weight)
    ref = reference.mining_contrastive_loss(a.astype(np.float64), b.astype(np.float64), sim, margin=margin,
                                            legacy_version=legacy, mining_ratio=ratio, loss_weight=loss_weight)
    assert core.grad_feat.dtype == dtype and core.cost.dtype == dtype  # float32 stays float32
    assert core.picked.sum() == n // ratio
    if selection_is_robust(a, b, sim, margin, legacy, ratio, dtype):
        assert core.picked.tolist() == ref.picked.tolist()
        assert_close(core.loss, ref.loss, dtype)
        assert_close(core.grad_feat, ref.grad_feat, dtype)
        assert_close(core.grad_feat_p, ref.grad_feat_p, dtype)
    assert_close(core.cost, ref.cost, dtype)


@examples
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 12), dim=st.integers(1, 5),
       batch_reduce=st.sampled_from(BATCH_REDUCES), loss_type=st.sampled_from(LOSS_TYPES), anchor_swap=st.booleans(),
       num_labels=st.sampled_from([0, 2, 4]), duplicates=st.booleans(), margin=st.sampled_from([0.5, 1.0, 1.7]),
       dtype=st.sampled_from([np.float64, np.float32]), loss_weight=st.sampled_from([1.0, 0.3]))
def test_hardnet_matches_reference(seed, n, dim, batch_reduce, loss_type, anchor_swap, num_labels, duplicates, margin,
                                   dtype, loss_weight):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        dim = max(dim, 3)  # in 1-2 dimensions some D_ij is almost surely tiny: float32's GEMM form cancels there
    a = rng.normal(size=(n, dim)) / np.sqrt(dim)
    offset = rng.normal(size=(n, dim))
    p = a + offset * (0.2 + 0.4 * rng.random((n, 1))) / np.linalg.norm(offset, axis=1, keepdims=True)
    if duplicates:
        p[1] = a[0]
    a, p = a.astype(dtype), p.astype(dtype)
    labels = rng.integers(0, num_labels, size=n).astype(np.float64) if num_labels else None
    uniforms = rng.random(n)
    kwargs = dict(margin=margin, anchor_swap=anchor_swap, batch_reduce=batch_reduce, loss_type=loss_type,
                  uniforms=uniforms, loss_weight=loss_weight)
    core = caffe_mining.hardnet_loss(a, p, labels, **kwargs)
    a64, p64 = a.astype(np.float64), p.astype(np.float64)
    ref = reference.hardnet_loss(a64, p64, labels, **kwargs)
    assert core.grad_anchor.dtype == dtype
    if dtype == np.float32 and not float32_decides_as_float64(a64, p64, labels, kwargs, ref, rng):
        return
    assert core.neg_index.tolist() == ref.neg_index.tolist()
    assert core.neg_swapped.tolist() == ref.neg_swapped.tolist()
    assert core.neg_count.tolist() == ref.neg_count.tolist()
    assert_close(core.loss, ref.loss, dtype)
    assert_close(core.pos_dist, ref.pos_dist, dtype)
    assert_close(core.neg_dist, ref.neg_dist, dtype)
    assert_close(core.grad_anchor, ref.grad_anchor, dtype)
    assert_close(core.grad_positive, ref.grad_positive, dtype)


def float32_decides_as_float64(a, p, labels, kwargs, ref, rng):
    """Whether float32 rounding (relative ~1e-7 of |a|^2 + |p|^2 in each distance) cannot move the inputs to
    another decision or hinge state: the reference's pieces stay the same under perturbations of 1e-4, and no
    distance that enters the loss (the diagonal, and candidates above the duplicate threshold) suffers a large
    cancellation. (A duplicate's distance, ~sqrt(eps), stays far below the threshold despite its cancellation.)"""
    dist = reference.hardnet_distance_matrix(a, p)
    norms = np.sum(a**2, axis=1)[:, None] + np.sum(p**2, axis=1)[None, :]
    used = (dist >= 0.008) | np.eye(len(a), dtype=bool)
    if np.min((dist**2 / np.maximum(norms, 1e-30))[used]) < 1e-3:
        return False
    for _ in range(4):
        da, dp = rng.normal(size=a.shape) * 1e-4, rng.normal(size=p.shape) * 1e-4
        for sign in (1, -1):
            moved = reference.hardnet_loss(a + sign * da, p + sign * dp, labels, **kwargs)
            if not np.array_equal(moved.pieces, ref.pieces) or moved.neg_count.tolist() != ref.neg_count.tolist():
                return False
    return True


def test_hardnet_every_option_combination_once(rng):
    """Not left to chance: each loss_type x batch_reduce x anchor_swap x labels, float64, against the reference."""
    a = rng.normal(size=(7, 3)) / np.sqrt(3)
    p = a + 0.4 * rng.normal(size=(7, 3)) / np.sqrt(3)
    labels = np.array([0, 1, 0, 2, 1, 0, 2], np.float64)
    u = rng.random(7)
    for br, lt, swap, lab in itertools.product(BATCH_REDUCES, LOSS_TYPES, [False, True], [None, labels]):
        kwargs = dict(batch_reduce=br, loss_type=lt, anchor_swap=swap, uniforms=u, loss_weight=0.7)
        core, ref = caffe_mining.hardnet_loss(a, p, lab, **kwargs), reference.hardnet_loss(a, p, lab, **kwargs)
        assert core.neg_index.tolist() == ref.neg_index.tolist(), (br, lt, swap)
        assert core.loss == pytest.approx(ref.loss, rel=1e-12)
        np.testing.assert_allclose(core.grad_anchor, ref.grad_anchor, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(core.grad_positive, ref.grad_positive, rtol=1e-10, atol=1e-14)


def test_contrastive_ratio_one_is_caffes_contrastive_loss(rng):
    a, b = rng.normal(size=(6, 3)) * 0.3, rng.normal(size=(6, 3)) * 0.3
    sim = np.array([1, 0, 0, 1, 0, 1], np.float64)
    r = caffe_mining.mining_contrastive_loss(a, b, sim)
    d = np.linalg.norm(a - b, axis=1)
    caffe_loss = np.sum(np.where(sim == 1, d**2, np.maximum(1 - d, 0) ** 2)) / 2 / 6
    assert r.loss == pytest.approx(caffe_loss, rel=1e-12)
    assert r.picked.all()


def test_contrastive_ratio_above_n_is_zero(rng):
    r = caffe_mining.mining_contrastive_loss(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), [1, 0, 1],
                                             mining_ratio=5)
    assert r.loss == 0.0 and not r.picked.any() and not r.grad_feat.any() and not r.grad_feat_p.any()


def test_layouts_and_caffe_blobs_give_the_same_answer(rng):
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    sim = [1, 0, 1, 0, 0]
    plain = caffe_mining.mining_contrastive_loss(a, b, sim, mining_ratio=2)
    fortran = caffe_mining.mining_contrastive_loss(np.asfortranarray(a), np.asfortranarray(b), sim, mining_ratio=2)
    strided = caffe_mining.mining_contrastive_loss(np.repeat(a, 2, axis=1)[:, ::2], b, sim, mining_ratio=2)
    blob = caffe_mining.mining_contrastive_loss(a[:, :, None, None], b[:, :, None, None],
                                                np.array(sim)[:, None, None, None], mining_ratio=2)
    for other in (fortran, strided, blob):
        assert other.loss == plain.loss
        np.testing.assert_array_equal(other.grad_feat.reshape(5, 4), plain.grad_feat)
    assert blob.grad_feat.shape == (5, 4, 1, 1)
    hn = caffe_mining.hardnet_loss(np.asfortranarray(a), b[::-1])
    np.testing.assert_array_equal(hn.grad_anchor, caffe_mining.hardnet_loss(a, b[::-1].copy()).grad_anchor)


def test_nested_lists_are_arrays():
    r = _core.mining_contrastive_loss([[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [1, 0])
    assert r[0] == pytest.approx((1.0 + 1.0) / 4) and r[1].dtype == np.float64


def test_backward_false_skips_gradients(rng):
    a, b = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    r = caffe_mining.mining_contrastive_loss(a, b, [1, 0, 1, 0], backward=False)
    assert r.grad_feat is None and r.grad_feat_p is None
    assert r.loss == caffe_mining.mining_contrastive_loss(a, b, [1, 0, 1, 0]).loss
    h = caffe_mining.hardnet_loss(a, b, backward=False)
    assert h.grad_anchor is None and h.loss == caffe_mining.hardnet_loss(a, b).loss


def test_ties_resolve_to_lower_index():
    # Four identical similar pairs and four identical dissimilar ones: K = 4 takes indices 0, 1 and 4, 5.
    a = np.tile([[0.3, 0.1]], (8, 1))
    b = np.zeros((8, 2))
    sim = [1, 1, 1, 1, 0, 0, 0, 0]
    r = caffe_mining.mining_contrastive_loss(a, b, sim, mining_ratio=2)
    assert np.flatnonzero(r.picked).tolist() == [0, 1, 4, 5]
    h = caffe_mining.hardnet_loss(np.eye(4), np.eye(4) * 1.1)  # every row's candidates at one distance
    assert h.neg_index.tolist() == [1, 0, 0, 0]


def test_nan_is_refused_or_propagated():
    a = np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]])
    b = np.zeros((3, 2))
    with pytest.raises(ValueError, match="non-finite value .* row 0"):
        caffe_mining.mining_contrastive_loss(a, b, [1, 0, 0])
    with pytest.raises(ValueError, match="non-finite value .* row 0"):
        caffe_mining.hardnet_loss(a, b)
    # Computed anyway: the NaN pair is the hardest of its kind, so the loss says NaN; no crash.
    r = caffe_mining.mining_contrastive_loss(a, b, [1, 0, 0], mining_ratio=3, check_finite=False)
    assert r.picked[0] and np.isnan(r.loss)
    for br in BATCH_REDUCES:
        h = caffe_mining.hardnet_loss(a, b, batch_reduce=br, uniforms=[0.5] * 3, check_finite=False)
        assert h.neg_index.min() >= -1 and h.neg_index.max() < 3  # indices stay in range


def contrastive_call(**overrides):
    kwargs = dict(feat=np.zeros((3, 2)), feat_p=np.zeros((3, 2)), sim=[0, 1, 0])
    kwargs.update(overrides)
    feat, feat_p, sim = kwargs.pop("feat"), kwargs.pop("feat_p"), kwargs.pop("sim")
    return _core.mining_contrastive_loss(feat, feat_p, sim, **kwargs)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(feat=np.zeros(3)), ValueError, r"feat must have shape \(N, D\) or \(N, D, 1, 1\). Got: \(3,\)"),
    (dict(feat=np.zeros((3, 2, 2))), ValueError, r"Got: \(3, 2, 2\)"),
    (dict(feat=np.zeros((0, 2)), feat_p=np.zeros((0, 2)), sim=[]), ValueError, "N >= 1"),
    (dict(feat_p=np.zeros((3, 3))), ValueError, r"feat_p must have the shape of feat \(\(3, 2\)\)"),
    (dict(feat=np.zeros((3, 2), np.int64)), TypeError, "feat must be float32 or float64. Got: int64"),
    (dict(feat=np.zeros((3, 2), np.float16)), TypeError, "float16"),
    (dict(feat=np.zeros((3, 2), ">f8")), TypeError, ">f8"),
    (dict(feat=None), TypeError, "feat must be a float32 or float64 array. Got: None"),
    (dict(feat_p=[[1.0], [2.0, 3.0], [4.0]]), TypeError, "feat_p must be a float32 or float64 array"),
    (dict(feat_p=np.zeros((3, 2), np.float32)), TypeError, r"feat_p must have the dtype of feat \(float64\)"),
    (dict(sim=[0, 1]), ValueError, "sim must hold N = 3 values. Got: 2"),
    (dict(sim=[0, 2, 1]), ValueError, r"sim\[1\] = 2"),
    (dict(sim=[0, np.nan, 1]), ValueError, r"sim\[1\] = nan"),
    (dict(sim="abc"), TypeError, "sim must be an array of real numbers"),
    (dict(sim=None), TypeError, "sim must be an array of real numbers"),
    (dict(mining_ratio=0), ValueError, "mining_ratio must be >= 1. Got: 0"),
    (dict(margin=float("inf")), ValueError, "margin must be finite"),
])
def test_contrastive_bad_arguments(overrides, error, message):
    with pytest.raises(error, match=message):
        contrastive_call(**overrides)


def hardnet_call(**overrides):
    kwargs = dict(anchor=np.eye(3), positive=np.eye(3) + 0.1, labels=None)
    kwargs.update(overrides)
    anchor, positive, labels = kwargs.pop("anchor"), kwargs.pop("positive"), kwargs.pop("labels")
    return _core.hardnet_loss(anchor, positive, labels, **kwargs)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(anchor=np.eye(3)[:1], positive=np.eye(3)[:1]), ValueError, "N >= 2 pairs.* Got: N = 1"),
    (dict(positive=np.eye(3)[:2]), ValueError, "positive must have the shape of anchor"),
    (dict(anchor=np.eye(3, dtype=np.float32)), TypeError, "positive must have the dtype of anchor"),
    (dict(labels=[1, 2]), ValueError, "labels must hold N = 3 values. Got: 2"),
    (dict(labels=[1, 2, np.inf]), ValueError, r"labels\[2\]"),
    (dict(labels=[1, np.nan, 2]), ValueError, r"labels must be finite class ids. Got: labels\[1\] = nan"),
    (dict(batch_reduce="max"), ValueError, "batch_reduce must be one of MIN, AVERAGE, RANDOM. Got: 'MAX'"),
    (dict(loss_type="hinge"), ValueError, "loss_type must be one of"),
    (dict(batch_reduce="RANDOM"), ValueError, "RANDOM needs uniforms"),
    (dict(batch_reduce="RANDOM", uniforms=[0.1, 1.0, 0.2]), ValueError, r"uniforms\[1\] = 1"),
    (dict(batch_reduce="RANDOM", uniforms=[0.1, 0.2]), ValueError, "uniforms must hold N = 3"),
    (dict(margin=-1.0), ValueError, "margin must be >= 0. Got: -1"),
    (dict(eps=0.0), ValueError, "eps must be > 0. Got: 0"),
    (dict(duplicate_threshold=-0.1), ValueError, "duplicate_threshold"),
])
def test_hardnet_bad_arguments(overrides, error, message):
    with pytest.raises(error, match=message):
        hardnet_call(**overrides)


def test_float32_labels_and_random_accept_valid_values():
    a = np.eye(3, dtype=np.float32)
    r = _core.hardnet_loss(a, a + np.float32(0.1), np.array([0, 1, 2], np.int64), batch_reduce="random",
                           uniforms=np.array([0.0, 0.5, 0.999], np.float32))
    assert r[1].dtype == np.float32 and r[3].dtype == np.int64
