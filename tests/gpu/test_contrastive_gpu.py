"""MiningContrastiveLoss on the CUDA core (caffe_mining._core_cuda) against the CPU core and the NumPy reference:
every option, the radix select's exact picks and ties at sizes 1 to 65537, determinism, NaN and bad input.
Tolerances: see gpu_support."""
import itertools

import numpy as np
import pytest
from gpu_support import (assert_close, assert_same_contrastive, dyadic_pairs, gpu_contrastive, host, to_device)

import caffe_mining
from caffe_mining import _core, reference

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sims", ["mixed", "all similar", "all dissimilar"])
def test_every_option_against_cpu_and_reference(rng, dtype, sims):
    n, dim = 37, 5
    a, b, sim = dyadic_pairs(rng, n, dim, levels=24, dtype=dtype)
    if sims != "mixed":
        sim[:] = 1.0 if sims == "all similar" else 0.0
    for ratio, legacy, margin, loss_weight in itertools.product([1, 2, 3, 4, 7, n, n + 1], [False, True],
                                                                [0.5, 1.0, 2.0], [1.0, -0.5]):
        kwargs = dict(margin=margin, legacy_version=legacy, mining_ratio=ratio, loss_weight=loss_weight)
        gpu = gpu_contrastive(a, b, sim, **kwargs)
        cpu = caffe_mining.mining_contrastive_loss(a, b, sim, **kwargs)
        assert_same_contrastive(gpu, cpu, dtype)
        ref = reference.mining_contrastive_loss(a.astype(np.float64), b.astype(np.float64), sim, **kwargs)
        np.testing.assert_array_equal(gpu.picked, ref.picked)  # dyadic inputs: exact costs, exact ties
        assert gpu.picked.sum() == n // ratio
        assert_close(gpu.loss, ref.loss, dtype)
        assert_close(gpu.grad_feat, ref.grad_feat, dtype)


@pytest.mark.parametrize("n", [1, 2, 3, 31, 255, 256, 257, 1000, 4097, 65535, 65536, 65537])
@pytest.mark.parametrize("dtype", DTYPES)
def test_radix_select_picks_exactly_at_every_size(rng, n, dtype):
    """Few distinct costs (many exact ties, broken by index) and, where float32 stays exact, all distinct."""
    for levels in (16, min(n, 4096) if dtype == np.float32 else n):
        a, b, sim = dyadic_pairs(rng, n, 3, levels=max(levels, 1), dtype=dtype)
        for ratio in (1, 3, 4, 1000):
            kwargs = dict(margin=2.0, mining_ratio=ratio)
            gpu = gpu_contrastive(a, b, sim, **kwargs)
            cpu = caffe_mining.mining_contrastive_loss(a, b, sim, **kwargs)
            np.testing.assert_array_equal(gpu.picked, cpu.picked, err_msg=f"n={n} levels={levels} ratio={ratio}")
            assert_same_contrastive(gpu, cpu, dtype)


def test_ties_resolve_to_lower_index():
    a = np.tile([[0.3, 0.1]], (8, 1))
    b = np.zeros((8, 2))
    r = gpu_contrastive(a, b, [1, 1, 1, 1, 0, 0, 0, 0], mining_ratio=2)
    assert np.flatnonzero(r.picked).tolist() == [0, 1, 4, 5]


@pytest.mark.parametrize("dtype", DTYPES)
def test_repeated_runs_are_bit_identical(rng, dtype):
    a, b, sim = dyadic_pairs(rng, 65537, 4, levels=100, dtype=dtype)
    a = a + rng.normal(size=a.shape).astype(dtype) * dtype(1e-3)  # inexact values too
    first = gpu_contrastive(a, b, sim, mining_ratio=3)
    for _ in range(3):
        again = gpu_contrastive(a, b, sim, mining_ratio=3)
        assert again.loss == first.loss
        for x, y in zip(again[1:5], first[1:5]):
            assert np.array_equal(x, y)


def test_host_sim_of_any_dtype_is_converted_as_on_the_cpu(rng):
    a, b, sim = dyadic_pairs(rng, 9, 2, levels=5, dtype=np.float32)
    cpu = caffe_mining.mining_contrastive_loss(a, b, sim.astype(np.int64), mining_ratio=2)
    for given in (sim.astype(np.int64), sim.tolist(), sim.astype(bool), sim):
        gpu = gpu_contrastive(a, b, given, sim_on_device=False, mining_ratio=2)
        assert_same_contrastive(gpu, cpu, np.float32)


def test_backward_false_and_blob_shapes(rng):
    a, b, sim = dyadic_pairs(rng, 6, 3, levels=6, dtype=np.float64)
    r = gpu_contrastive(a, b, sim, backward=False)
    assert r.grad_feat is None and r.grad_feat_p is None
    blob = gpu_contrastive(a[:, :, None, None], b[:, :, None, None], sim)
    assert blob.grad_feat.shape == (6, 3, 1, 1)
    assert_same_contrastive(blob, caffe_mining.mining_contrastive_loss(a[:, :, None, None], b[:, :, None, None], sim),
                            np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, "overflow"])
def test_non_finite_input_as_on_the_cpu(rng, dtype, bad):
    a, b, sim = dyadic_pairs(rng, 12, 3, levels=12, dtype=dtype)
    if bad == "overflow":  # finite features whose squared distance overflows
        a[4] = np.finfo(dtype).max / 4
    else:
        a[4, 1] = bad
    for ratio in (1, 4):
        cpu = caffe_mining.mining_contrastive_loss(a, b, sim, mining_ratio=ratio, check_finite=False)
        gpu = gpu_contrastive(a, b, sim, mining_ratio=ratio, check_finite=False)
        np.testing.assert_array_equal(gpu.picked, cpu.picked)
        # The policy of both paths: a NaN loss and NaN in every gradient element.
        assert np.isnan(gpu.loss) and np.isnan(cpu.loss)
        assert np.isnan(gpu.grad_feat).all() and np.isnan(gpu.grad_feat_p).all()
        for g, c in ((gpu.grad_feat, cpu.grad_feat), (gpu.grad_feat_p, cpu.grad_feat_p), (gpu.cost, cpu.cost)):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(c))
            finite = np.isfinite(c)
            assert_close(g[finite], c[finite], dtype)
    if bad != "overflow":
        with pytest.raises(ValueError) as on_cpu:
            caffe_mining.mining_contrastive_loss(a, b, sim)
        with pytest.raises(ValueError) as on_gpu:
            gpu_contrastive(a, b, sim)
        assert str(on_gpu.value) == str(on_cpu.value)


BAD_CALLS = [
    dict(feat=np.zeros(3)),
    dict(feat=np.zeros((3, 2, 2))),
    dict(feat=np.zeros((0, 2)), feat_p=np.zeros((0, 2)), sim=[]),
    dict(feat_p=np.zeros((3, 3))),
    dict(feat=np.zeros((3, 2), np.int64)),
    dict(feat=np.zeros((3, 2), np.float16)),
    dict(feat=np.zeros((3, 2), ">f8")),
    dict(feat_p=np.zeros((3, 2), np.float32)),
    dict(sim=[0, 1]),
    dict(sim=[0, 2, 1]),
    dict(sim=[0, np.nan, 1]),
    dict(sim=np.array([0, 2.5, 1])),
    dict(sim="abc"),
    dict(sim=None),
    dict(mining_ratio=0),
    dict(margin=float("inf")),
    dict(loss_weight=float("nan")),
    dict(feat=np.array([[0.0, 1.0], [np.inf, 0.0], [0.0, 0.0]])),
    dict(feat_p=np.array([[0.0, 1.0], [0.0, 0.0], [0.0, np.nan]])),
]


@pytest.mark.parametrize("overrides", BAD_CALLS, ids=range(len(BAD_CALLS)))
@pytest.mark.parametrize("sim_on_device", [False, True])
def test_bad_arguments_raise_as_on_the_cpu(overrides, sim_on_device):
    kwargs = dict(feat=np.zeros((3, 2)), feat_p=np.zeros((3, 2)), sim=[0, 1, 0])
    kwargs.update(overrides)
    feat, feat_p, sim = kwargs.pop("feat"), kwargs.pop("feat_p"), kwargs.pop("sim")
    with pytest.raises((TypeError, ValueError)) as on_cpu:
        _core.mining_contrastive_loss(feat, feat_p, sim, **kwargs)
    if sim_on_device:
        if sim is None or isinstance(sim, str):
            pytest.skip("this sim has no device form")
        try:
            sim = to_device(np.asarray(sim, np.asarray(feat).dtype))
        except (TypeError, ValueError):
            pytest.skip("this sim has no device form")
    with pytest.raises(on_cpu.type) as on_gpu:
        caffe_mining.mining_contrastive_loss(to_device(feat), to_device(feat_p), sim, **kwargs)
    assert str(on_gpu.value) == str(on_cpu.value)


def test_host_feature_beside_a_device_one_is_refused():
    with pytest.raises(TypeError, match="feat_p must be a device array"):
        caffe_mining.mining_contrastive_loss(to_device(np.zeros((2, 2))), np.zeros((2, 2)), [0, 1])


@pytest.mark.memcheck
@pytest.mark.parametrize("n", [1, 257, 4097])
def test_memcheck_contrastive(n):
    """Small and direct (_core_cuda, no CuPy): rerun under compute-sanitizer by scripts/device_check.sh."""
    from caffe_mining import _core_cuda
    rng = np.random.default_rng(n)
    for dtype in DTYPES:
        a, b, sim = dyadic_pairs(rng, n, 3, levels=8, dtype=dtype)
        for ratio, legacy in itertools.product((1, 3), (False, True)):
            out = _core_cuda.mining_contrastive_loss(to_device(a), to_device(b), to_device(sim.astype(dtype)),
                                                     mining_ratio=ratio, legacy_version=legacy)
            cpu = _core.mining_contrastive_loss(a, b, sim, mining_ratio=ratio, legacy_version=legacy)
            np.testing.assert_array_equal(host(out[3]), cpu[3])
