"""HardNetLoss on the CUDA core (caffe_mining._core_cuda) against the CPU core and the NumPy reference: every
batch_reduce x loss_type x anchor_swap with and without labels, duplicates and rows without negatives, exact picks
and ties, sizes that are no multiple of a block, float32 and float64, determinism, RANDOM with the CPU's uniforms,
NaN and bad input. Tolerances: see gpu_support."""
import itertools

import numpy as np
import pytest
from gpu_support import (assert_close, assert_same_hardnet, dyadic_descriptors, gpu_hardnet, host,
                         separated_descriptors, to_device)

import caffe_mining
from caffe_mining import _core, reference
from caffe_mining.options import BATCH_REDUCES, LOSS_TYPES

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]


def labelled_inputs(rng, n, dim, dtype, kind):
    """Anchors, positives and labels: 'none'; 'classes' (4 classes); 'empty rows' (rows 0..n-2 share a class, so
    only row n-1 can be their negative, and row 0's candidate n-1 is a duplicate both ways: row 0 has none)."""
    a, p = dyadic_descriptors(rng, n, dim, dtype)
    p[1] = a[0]  # a duplicate: D_01 < duplicate_threshold
    if kind == "none":
        return a, p, None
    if kind == "classes":
        return a, p, rng.integers(0, 4, size=n).astype(np.float64)
    p[n - 1], a[n - 1] = a[0], p[0]
    return a, p, np.array([0.0] * (n - 1) + [1.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels_kind", ["none", "classes", "empty rows"])
@pytest.mark.parametrize("anchor_swap", [False, True])
def test_every_option_against_cpu_and_reference(rng, dtype, labels_kind, anchor_swap):
    n, dim = 37, 6
    a, p, labels = labelled_inputs(rng, n, dim, dtype, labels_kind)
    uniforms = rng.random(n)
    for batch_reduce, loss_type, margin in itertools.product(BATCH_REDUCES, LOSS_TYPES, [0.5, 1.0]):
        kwargs = dict(margin=margin, anchor_swap=anchor_swap, batch_reduce=batch_reduce, loss_type=loss_type,
                      loss_weight=0.7, uniforms=uniforms)
        gpu = gpu_hardnet(a, p, labels, **kwargs)
        cpu = caffe_mining.hardnet_loss(a, p, labels, **kwargs)
        assert_same_hardnet(gpu, cpu, dtype)
        ref = reference.hardnet_loss(a.astype(np.float64), p.astype(np.float64), labels, **kwargs)
        np.testing.assert_array_equal(gpu.neg_index, ref.neg_index)  # dyadic inputs: exact ties, kept order
        np.testing.assert_array_equal(gpu.neg_count, ref.neg_count)
        assert_close(gpu.loss, ref.loss, dtype)
        assert_close(gpu.grad_anchor, ref.grad_anchor, dtype)
        assert_close(gpu.grad_positive, ref.grad_positive, dtype)
        if labels_kind == "empty rows":
            assert gpu.neg_index[0] == -1 and gpu.neg_count[0] == 0


@pytest.mark.parametrize("n", [2, 3, 63, 64, 65, 127, 129, 255, 257, 513, 1025])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sizes_that_are_no_multiple_of_a_block(rng, n, dtype):
    dim = 16
    if dtype == np.float64:  # Gaussian: distinct distances, far beyond float64 rounding
        a, p = separated_descriptors(rng, n, dim, dtype)
    else:
        a, p = dyadic_descriptors(rng, n, dim, dtype)
    uniforms = rng.random(n)
    for batch_reduce, anchor_swap in itertools.product(BATCH_REDUCES, [False, True]):
        kwargs = dict(anchor_swap=anchor_swap, batch_reduce=batch_reduce, uniforms=uniforms)
        assert_same_hardnet(gpu_hardnet(a, p, **kwargs), caffe_mining.hardnet_loss(a, p, **kwargs), dtype)


@pytest.mark.parametrize("anchor_swap", [False, True])
def test_float32_gaussian_picks_where_separated(rng, anchor_swap):
    a, p = separated_descriptors(rng, 12, 8, np.float32)
    for batch_reduce in BATCH_REDUCES:
        kwargs = dict(anchor_swap=anchor_swap, batch_reduce=batch_reduce, uniforms=rng.random(12))
        assert_same_hardnet(gpu_hardnet(a, p, **kwargs), caffe_mining.hardnet_loss(a, p, **kwargs), np.float32)


def test_large_batch_float32(rng):
    n, dim = 4096, 128
    a, p = dyadic_descriptors(rng, n, dim, np.float32)
    for batch_reduce, anchor_swap in [("MIN", False), ("MIN", True), ("RANDOM", False), ("AVERAGE", True)]:
        kwargs = dict(anchor_swap=anchor_swap, batch_reduce=batch_reduce, uniforms=rng.random(n))
        assert_same_hardnet(gpu_hardnet(a, p, **kwargs), caffe_mining.hardnet_loss(a, p, **kwargs), np.float32)


def test_ties_resolve_to_lower_index():
    h = gpu_hardnet(np.eye(4), np.eye(4) * 1.1)
    assert h.neg_index.tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_reduce", BATCH_REDUCES)
@pytest.mark.parametrize("anchor_swap", [False, True])
def test_repeated_runs_are_bit_identical(rng, dtype, batch_reduce, anchor_swap):
    n = 300
    a = (rng.normal(size=(n, 32)) / 6).astype(dtype)
    p = (a + rng.normal(size=(n, 32)) / 12).astype(dtype)
    kwargs = dict(anchor_swap=anchor_swap, batch_reduce=batch_reduce, uniforms=rng.random(n))
    first = gpu_hardnet(a, p, **kwargs)
    for _ in range(3):
        again = gpu_hardnet(a, p, **kwargs)
        assert again.loss == first.loss
        for x, y in zip(again[1:8], first[1:8]):
            assert np.array_equal(x, y)


def test_random_takes_the_cpus_candidate_for_the_same_uniforms(rng):
    a, p = dyadic_descriptors(rng, 50, 8, np.float32)
    labels = rng.integers(0, 5, size=50)
    for u in (np.zeros(50), np.full(50, np.nextafter(np.float32(1), np.float32(0))), rng.random(50)):
        for anchor_swap in (False, True):
            kwargs = dict(batch_reduce="RANDOM", anchor_swap=anchor_swap, uniforms=u)
            gpu = gpu_hardnet(a, p, labels, **kwargs)
            np.testing.assert_array_equal(gpu.neg_index, caffe_mining.hardnet_loss(a, p, labels, **kwargs).neg_index)


def test_host_labels_and_uniforms_of_any_dtype(rng):
    a, p = dyadic_descriptors(rng, 8, 4, np.float32)
    labels, u = np.array([0, 1, 0, 2, 1, 0, 2, 3], np.int64), rng.random(8)
    cpu = caffe_mining.hardnet_loss(a, p, labels, batch_reduce="RANDOM", uniforms=u)
    gpu = type(cpu)(*[host(x) for x in caffe_mining.hardnet_loss(to_device(a), to_device(p), labels.tolist(),
                                                                  batch_reduce="RANDOM", uniforms=u.tolist())])
    assert_same_hardnet(gpu, cpu, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, "overflow"])
@pytest.mark.parametrize("batch_reduce", BATCH_REDUCES)
def test_non_finite_input_as_on_the_cpu(rng, dtype, bad, batch_reduce):
    a, p = dyadic_descriptors(rng, 9, 4, dtype)
    if bad == "overflow":  # finite features whose squared distances overflow
        a[3] = np.finfo(dtype).max / 4
    else:
        a[3, 2] = bad
    for anchor_swap in (False, True):
        kwargs = dict(batch_reduce=batch_reduce, anchor_swap=anchor_swap, uniforms=rng.random(9), check_finite=False)
        cpu = caffe_mining.hardnet_loss(a, p, **kwargs)
        gpu = gpu_hardnet(a, p, **kwargs)
        np.testing.assert_array_equal(gpu.neg_index, cpu.neg_index)
        np.testing.assert_array_equal(gpu.neg_count, cpu.neg_count)
        # The policy of both paths: a NaN loss, no row mined, NaN in every gradient element.
        assert np.isnan(gpu.loss) and np.isnan(cpu.loss)
        assert (gpu.neg_index == -1).all() and (gpu.neg_count == 0).all()
        assert np.isnan(gpu.grad_anchor).all() and np.isnan(gpu.grad_positive).all()
        for g, c in zip(gpu[1:3], cpu[1:3]):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(c))
    if bad != "overflow":
        with pytest.raises(ValueError) as on_cpu:
            caffe_mining.hardnet_loss(a, p)
        with pytest.raises(ValueError) as on_gpu:
            gpu_hardnet(a, p)
        assert str(on_gpu.value) == str(on_cpu.value)


BAD_CALLS = [
    dict(anchor=np.eye(3)[:1], positive=np.eye(3)[:1]),
    dict(positive=np.eye(3)[:2]),
    dict(anchor=np.eye(3, dtype=np.float32)),
    dict(anchor=np.zeros((3, 3), np.int32), positive=np.zeros((3, 3), np.int32)),
    dict(labels=[1, 2]),
    dict(labels=[1, 2, np.inf]),
    dict(labels=[1, np.nan, 2]),
    dict(labels=np.array([0.5, np.nan, 2.0], np.float32)),
    dict(batch_reduce="max"),
    dict(loss_type="hinge"),
    dict(batch_reduce="RANDOM"),
    dict(batch_reduce="RANDOM", uniforms=[0.1, 1.0, 0.2]),
    dict(batch_reduce="RANDOM", uniforms=[0.1, -0.5, 0.2]),
    dict(batch_reduce="RANDOM", uniforms=[0.1, 0.2, np.nan]),
    dict(batch_reduce="RANDOM", uniforms=[0.1, 0.2]),
    dict(margin=-1.0),
    dict(eps=0.0),
    dict(duplicate_threshold=-0.1),
    dict(loss_weight=float("inf")),
    dict(anchor=np.array([[0.0, 1.0, 0.0], [np.nan, 0.0, 0.0], [0.0, 0.0, 1.0]])),
]


@pytest.mark.parametrize("overrides", BAD_CALLS, ids=range(len(BAD_CALLS)))
@pytest.mark.parametrize("rows_on_device", [False, True])
def test_bad_arguments_raise_as_on_the_cpu(overrides, rows_on_device):
    kwargs = dict(anchor=np.eye(3), positive=np.eye(3) + 0.1, labels=None)
    kwargs.update(overrides)
    anchor, positive, labels = kwargs.pop("anchor"), kwargs.pop("positive"), kwargs.pop("labels")
    with pytest.raises((TypeError, ValueError)) as on_cpu:
        _core.hardnet_loss(anchor, positive, labels, **kwargs)
    if rows_on_device:
        dtype = anchor.dtype
        if dtype.kind != "f":
            pytest.skip("no device form")
        labels = None if labels is None else to_device(np.asarray(labels, dtype))
        if kwargs.get("uniforms") is not None:
            kwargs["uniforms"] = to_device(np.asarray(kwargs["uniforms"], dtype))
    with pytest.raises(on_cpu.type) as on_gpu:
        caffe_mining.hardnet_loss(to_device(anchor), to_device(positive), labels, **kwargs)
    assert str(on_gpu.value) == str(on_cpu.value)


@pytest.mark.memcheck
@pytest.mark.parametrize("n", [2, 65])
def test_memcheck_hardnet(n):
    """Small and direct (_core_cuda, no CuPy): rerun under compute-sanitizer by scripts/device_check.sh."""
    from caffe_mining import _core_cuda
    rng = np.random.default_rng(n)
    for dtype in DTYPES:
        a, p = dyadic_descriptors(rng, n, 5, dtype)
        labels = rng.integers(0, 3, size=n).astype(dtype)
        u = rng.random(n).astype(dtype)
        for br, lt, swap, lab in itertools.product(BATCH_REDUCES, LOSS_TYPES, [False, True], [None, labels]):
            kwargs = dict(batch_reduce=br, loss_type=lt, anchor_swap=swap, uniforms=u)
            out = _core_cuda.hardnet_loss(to_device(a), to_device(p), None if lab is None else to_device(lab),
                                          **kwargs)
            cpu = _core.hardnet_loss(a, p, lab, **kwargs)
            np.testing.assert_array_equal(host(out[3]), cpu[3])


@pytest.mark.parametrize("anchor_swap", [False, True])
def test_identical_rows_tie_by_index_with_cublas_distances(rng, anchor_swap):
    """Gaussian float32 (inexact) copies of one positive at columns 3, 5, 9, 17, the nearest to anchor 0: their
    distances must come out of cuBLAS bit-identical (hardnet.hpp relies on it; cuBLAS does not promise it), so row
    0 takes the lowest, 3. (Not compared with the CPU: OpenBLAS's float32 GEMM gave such copies different dot
    products here, and the CPU core took 9 in 3 of 5 draws; see tests/test_gpu_suite_on_cpu.py.)"""
    a = rng.normal(size=(40, 32)).astype(np.float32)
    p = (a + 0.5 * rng.normal(size=(40, 32))).astype(np.float32)
    p[[3, 5, 9, 17]] = a[0] * np.float32(0.9)
    for batch_reduce in ("MIN", "AVERAGE"):
        gpu = gpu_hardnet(a, p, anchor_swap=anchor_swap, batch_reduce=batch_reduce)
        assert gpu.neg_index[0] == 3
