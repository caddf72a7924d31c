"""Bad input never becomes a quiet wrong number (issue 11, items 1-7), on the core through the bindings.

- Non-finite input (NaN, inf, or features so large that a squared distance overflows): the loss is NaN and every
  gradient element NaN, for both losses and every mode, whichever row holds it and whether or not it is picked.
- Options: one check (the core's), in the layer, the bindings and the Python options; values are checked as given
  and once rounded to the loss's dtype.
- Identical inputs give identical costs wherever they sit in memory (the tie rule in float64 too).
- Labels keep their classes exactly (any integer), uniforms are checked as given.
The Caffe layers' side of the same rules (CHECK messages) is in test_bad_input_layers.py.
"""
import itertools
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from caffe_mining import _core
from caffe_mining.options import ContrastiveOptions, HardNetOptions

HARDNET_MODES = [dict(batch_reduce=reduce, anchor_swap=swap, loss_type=loss_type)
                 for reduce, swap, loss_type in itertools.product(("MIN", "AVERAGE", "RANDOM"), (False, True),
                                                                  ("TRIPLET_MARGIN", "SOFTMAX", "CONTRASTIVE"))]


def hardnet(anchor, positive, labels=None, **options):
    if options.get("batch_reduce") == "RANDOM":
        options.setdefault("uniforms", np.linspace(0, 0.9, len(anchor)))
    return _core.hardnet_loss(anchor, positive, labels, check_finite=False, **options)


def assert_all_nan_result(result):
    loss, grad_a, grad_p, neg_index, neg_swapped, neg_count = result[:6]
    assert np.isnan(loss)
    assert np.isnan(grad_a).all() and np.isnan(grad_p).all()
    assert (neg_index == -1).all() and not neg_swapped.any() and (neg_count == 0).all()


def well_separated(rng, n, dim, dtype):
    anchor = rng.normal(size=(n, dim))
    return anchor.astype(dtype), (anchor + 0.1 * rng.normal(size=(n, dim))).astype(dtype)


# ---------------------------------------------------------------------------------------------------------------
# 1. NaN and inf in a feature

@pytest.mark.parametrize("mode", HARDNET_MODES, ids=lambda m: "-".join(str(v) for v in m.values()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_hardnet_non_finite_feature_gives_nan_loss_and_gradients(rng, mode, dtype, bad):
    anchor, positive = well_separated(rng, 6, 4, dtype)
    for side in (anchor, positive):
        clean = side.copy()
        side[3, 1] = bad
        assert_all_nan_result(hardnet(anchor, positive, **mode))
        side[...] = clean


def test_hardnet_nan_row_with_labels_and_min_is_not_left_out(rng):
    """The old rule left a NaN row out of the MIN mean (the clamp turned NaN into 0): the loss was finite."""
    anchor, positive = well_separated(rng, 8, 5, np.float64)
    anchor[2] = np.nan
    assert_all_nan_result(hardnet(anchor, positive, labels=np.arange(8) % 3))


def test_hardnet_bindings_still_refuse_non_finite_by_default():
    anchor = np.eye(3)
    anchor[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"anchor holds a non-finite value \(nan\) at row 1"):
        _core.hardnet_loss(anchor, np.eye(3) + 0.1)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_contrastive_unpicked_non_finite_pair_still_gives_nan(rng, legacy, dtype, bad):
    """A dissimilar NaN pair used to cost 0 (the hinge hid it), and with K = 2 of 8 an unpicked NaN or inf pair left
    the loss finite: now the loss and every gradient are NaN."""
    feat = rng.normal(size=(8, 3)).astype(dtype)
    feat_p = rng.normal(size=(8, 3)).astype(dtype)
    sim = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    feat[5, 0] = bad  # dissimilar
    loss, grad_a, grad_b, picked, cost = _core.mining_contrastive_loss(
        feat, feat_p, sim, mining_ratio=4, legacy_version=legacy, check_finite=False)
    assert np.isnan(loss) and np.isnan(grad_a).all() and np.isnan(grad_b).all()
    assert picked.sum() == 2
    if bad != bad:  # a NaN cost stays NaN and ranks hardest of its kind
        assert np.isnan(cost[5]) and picked[5]


def test_contrastive_ratio_above_n_with_nan_is_nan(rng):
    feat = rng.normal(size=(3, 2))
    feat[0, 0] = np.nan
    loss, grad_a, _, picked, _ = _core.mining_contrastive_loss(feat, feat * 0, [1, 0, 1], mining_ratio=9,
                                                               check_finite=False)
    assert np.isnan(loss) and np.isnan(grad_a).all() and not picked.any()


# ---------------------------------------------------------------------------------------------------------------
# 2. Overflow is not "no negative"

@pytest.mark.parametrize("mode", HARDNET_MODES[::2], ids=lambda m: "-".join(str(v) for v in m.values()))
@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e30), (np.float64, 1e200)])
def test_hardnet_overflowing_features_give_nan_not_zero(rng, mode, dtype, scale):
    anchor, positive = well_separated(rng, 6, 4, np.float64)
    result = _core.hardnet_loss((anchor * scale).astype(dtype), (positive * scale).astype(dtype),
                                **({"uniforms": np.zeros(6)} if mode["batch_reduce"] == "RANDOM" else {}), **mode)
    assert_all_nan_result(result)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hardnet_overflow_bound_is_exact(dtype):
    """Rows (v, 0) and (0, v): every squared norm is s = fl(v^2) and the rule's bound 2 (s + s) = 4s. The last v with
    4s finite gives a finite loss, the next representable v a NaN one."""
    with np.errstate(over="ignore"):
        v = dtype(np.sqrt(np.finfo(dtype).max / 4))
        while np.isfinite(dtype(4) * (v * v)):
            v = np.nextafter(v, dtype(np.inf))
    for value, finite in ((np.nextafter(v, dtype(0)), True), (v, False)):
        rows = np.array([[value, 0], [0, value]], dtype)
        loss = _core.hardnet_loss(rows, rows.copy(), duplicate_threshold=0.0)[0]
        assert np.isfinite(loss) == finite, (value, loss)


def test_contrastive_overflowing_difference_gives_nan():
    big = np.finfo(np.float32).max
    feat = np.array([[big], [1.0]], np.float32)
    loss, grad_a, _, _, _ = _core.mining_contrastive_loss(feat, -feat, [1, 1])
    assert np.isnan(loss) and np.isnan(grad_a).all()


# ---------------------------------------------------------------------------------------------------------------
# 3 and 7. One check of the options, dtype-aware

@pytest.mark.parametrize("option, value, message", [
    ("margin", np.inf, "margin must be finite. Got: inf"),
    ("margin", np.nan, "margin must be finite. Got: nan"),
    ("eps", np.inf, "eps must be finite. Got: inf"),
    ("eps", -1e-3, "eps must be > 0. Got: -0.001"),
    ("duplicate_threshold", np.inf, "duplicate_threshold must be finite. Got: inf"),
    ("margin", -0.5, "margin must be >= 0. Got: -0.5"),
])
def test_hardnet_options_refused_everywhere_with_one_message(option, value, message):
    assert _core.hardnet_options_problem(**{option: value}) == message
    with pytest.raises(ValueError, match=message):
        _core.hardnet_loss(np.eye(3), np.eye(3) + 0.1, **{option: value})
    with pytest.raises(ValueError, match=message):
        HardNetOptions(**{option: value})


@pytest.mark.parametrize("option, value, becomes", [
    ("eps", 1e-50, "0"), ("eps", 1e39, "inf"), ("duplicate_threshold", 1e39, "inf"), ("margin", 1e39, "inf")])
def test_hardnet_options_checked_once_rounded_to_float32(option, value, becomes):
    problem = _core.hardnet_options_problem(**{option: value}, dtype="float32")
    assert f"once rounded to float32 (it becomes {becomes})" in problem
    assert _core.hardnet_options_problem(**{option: value}, dtype="float64") == ""
    a = np.eye(3)
    with pytest.raises(ValueError, match="once rounded to float32"):
        _core.hardnet_loss(a.astype(np.float32), (a + 0.1).astype(np.float32), **{option: value})
    assert np.isfinite(_core.hardnet_loss(a, a + 0.1, **{option: value})[0]) or option == "margin"


@pytest.mark.parametrize("margin, dtype, message", [
    (np.nan, "float64", "margin must be finite. Got: nan"),
    (np.inf, "float64", "margin must be finite. Got: inf"),
    (1e39, "float32", "margin must stay finite once rounded to float32 (it becomes inf)"),
])
def test_contrastive_margin_refused_everywhere(margin, dtype, message):
    assert _core.contrastive_options_problem(margin=margin, dtype=dtype).startswith(message)
    feat = np.zeros((2, 2), dtype)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _core.mining_contrastive_loss(feat, feat, [1, 0], margin=margin)
    if dtype == "float64":
        with pytest.raises(ValueError, match=message):
            ContrastiveOptions(margin=margin)


def test_contrastive_negative_margin_stays_allowed():
    """As Caffe's ContrastiveLoss: a negative margin is legal (every dissimilar pair costs 0)."""
    assert _core.contrastive_options_problem(margin=-1.0) == ""
    loss = _core.mining_contrastive_loss(np.ones((2, 2)), np.zeros((2, 2)), [0, 0], margin=-1.0)[0]
    assert loss == 0.0


# ---------------------------------------------------------------------------------------------------------------
# 6. Identical pairs, identical costs: the tie rule in float64 and float32, for every D and alignment

def identical_pairs_failures(dtype, seed=0):
    """The dims (1..64) where eight identical pairs do not all cost the same or do not pick rows 0-3."""
    rng = np.random.default_rng(seed)
    failures = []
    for dim in range(1, 65):
        row_a, row_b = rng.normal(size=dim), rng.normal(size=dim)
        feat = np.tile(row_a, (8, 1)).astype(dtype)
        feat_p = np.tile(row_b, (8, 1)).astype(dtype)
        _, _, _, picked, cost = _core.mining_contrastive_loss(feat, feat_p, np.ones(8), mining_ratio=2)
        if len(set(cost.tolist())) != 1 or picked.tolist() != [True] * 4 + [False] * 4:
            failures.append(dim)
    return failures


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contrastive_identical_pairs_tie_to_the_lowest_rows(dtype):
    assert identical_pairs_failures(dtype) == []


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS x86 kernel names")
@pytest.mark.parametrize("coretype", ["Prescott", "Haswell"])
def test_identical_pairs_tie_whatever_blas_kernel(coretype):
    """The tie rule must not depend on the BLAS kernel: with OpenBLAS's generic kernel (what it falls back to on CPUs
    it does not know) the old cblas_ddot distances differed with the row's alignment (rows 1, 3, 5, 7 picked)."""
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_bad_input as t; "
            "f = [t.identical_pairs_failures(d) for d in (np.float32, np.float64)]; print(f); sys.exit(any(f))")
    done = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_CORETYPE=coretype), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [dict(), dict(anchor_swap=True), dict(batch_reduce="AVERAGE")])
def test_hardnet_identical_rows_tie_to_the_lowest_column(rng, dtype, mode):
    """Rows 1..n-1 of the positives are identical: every anchor's distances to them are equal, so MIN takes the
    lowest valid column; their norms must agree to the bit wherever the row sits."""
    for dim in (3, 5, 7, 9, 17, 33):
        anchor = rng.normal(size=(7, dim)).astype(dtype)
        positive = np.tile(rng.normal(size=dim), (7, 1)).astype(dtype)
        result = _core.hardnet_loss(anchor, positive, duplicate_threshold=0.0, **mode)
        neg_index = result[3]
        if mode.get("anchor_swap"):
            continue  # the swapped values differ per anchor; the unswapped tie is what this checks
        assert neg_index.tolist() == [1] + [0] * 6, (dim, neg_index)


# ---------------------------------------------------------------------------------------------------------------
# 7. Labels and uniforms as given

def test_int64_labels_keep_their_classes():
    a = np.eye(3, dtype=np.float32)
    big = np.array([2**62, 2**62 + 1, 2**62], np.int64)  # rows 0 and 2 share a class, row 1 does not
    neg_index = _core.hardnet_loss(a, a + np.float32(0.1), big)[3]
    assert neg_index.tolist() == [1, 0, 1]
    as_float = _core.hardnet_loss(a, a + np.float32(0.1), np.array([2**24, 2**24 + 1, 2**24]))[3]
    assert as_float.tolist() == [1, 0, 1]


def test_uniform_just_below_one_is_accepted_and_a_bad_one_is_shown_exactly():
    a = np.eye(4, dtype=np.float32)
    u = np.array([0.99999999999, 0.0, 0.5, 0.25])
    neg_index = _core.hardnet_loss(a, a + np.float32(0.1), batch_reduce="RANDOM", uniforms=u)[3]
    assert neg_index[0] == 3  # the last of row 0's valid candidates 1, 2, 3
    with pytest.raises(ValueError, match=r"uniforms\[0\] = 1.0000000001\b"):
        _core.hardnet_loss(a, a + np.float32(0.1), batch_reduce="RANDOM", uniforms=[1.0000000001, 0, 0, 0])
