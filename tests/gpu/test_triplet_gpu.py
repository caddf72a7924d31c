"""TripletLoss on the CUDA core (caffe_mining._core_cuda) against the CPU core and the NumPy reference: every
mining x soft_margin x squared, exact picks and ties (dyadic inputs), anchors without positives or negatives,
sizes that are no multiple of a block, float32 and float64, determinism, NaN and bad input. Tolerances: see
gpu_support."""
import itertools

import numpy as np
import pytest
from gpu_support import assert_close, assert_same_triplet, gpu_triplet, host, to_device

import caffe_mining
from caffe_mining import _core, reference
from caffe_mining.losses.triplet import MININGS

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
OPTIONS = list(itertools.product(MININGS, [False, True], [False, True]))


def dyadic_embeddings(rng, n, dim, dtype, step=0.25):
    """Embeddings on a coarse grid (|x| <= 1): norms and dot products exact in float32, so equal distances are
    bit-equal on CPU and GPU (ties broken by index) and distinct ones stay ordered."""
    return (rng.integers(-4, 5, size=(n, dim)) * step).astype(dtype)


def labels_of(rng, n, kind):
    """'classes': about four rows a class; 'singletons': rows 0 and 1 alone in their class (no positive), the rest
    in two classes."""
    if kind == "classes":
        return rng.integers(0, max(2, n // 4), size=n)
    return np.array([10, 11] + [i % 2 for i in range(n - 2)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels_kind", ["classes", "singletons"])
def test_every_option_against_cpu_and_reference(rng, dtype, labels_kind):
    n, dim = 37, 6
    x = dyadic_embeddings(rng, n, dim, dtype)
    labels = labels_of(rng, n, labels_kind)
    for mining, soft, squared in OPTIONS:
        kwargs = dict(mining=mining, soft_margin=soft, squared=squared, margin=0.5, loss_weight=0.7)
        gpu = gpu_triplet(x, labels, **kwargs)
        cpu = caffe_mining.triplet_loss(x, labels, **kwargs)
        assert_same_triplet(gpu, cpu, dtype)
        ref = reference.triplet_loss(x.astype(np.float64), labels, **kwargs)
        np.testing.assert_array_equal(gpu.triplets, ref.triplets)  # dyadic inputs: exact ties, kept order
        if dtype == np.float64:  # float32 drops eps (1e-12) next to D^2 >= 1/16: hinges at their kink differ
            assert gpu.terms == ref.terms
            assert_close(gpu.loss, ref.loss, dtype)
            assert_close(gpu.grad_embedding, ref.grad_embedding, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels", [np.zeros(7), np.arange(7)], ids=["one class", "all distinct"])
def test_no_term_gives_zero_as_on_the_cpu(rng, dtype, labels):
    x = dyadic_embeddings(rng, 7, 3, dtype)
    for mining, soft, squared in OPTIONS:
        gpu = gpu_triplet(x, labels, mining=mining, soft_margin=soft, squared=squared)
        assert gpu.loss == 0.0 and gpu.terms == 0 and np.all(gpu.grad_embedding == 0)
        assert_same_triplet(gpu, caffe_mining.triplet_loss(x, labels, mining=mining, soft_margin=soft,
                                                           squared=squared), dtype)


@pytest.mark.parametrize("n", [1, 2, 3, 65, 257, 513])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sizes_that_are_no_multiple_of_a_block(rng, n, dtype):
    x = dyadic_embeddings(rng, n, 16, dtype)
    labels = rng.integers(0, max(2, n // 5), size=n)
    for mining in MININGS:
        assert_same_triplet(gpu_triplet(x, labels, mining=mining), caffe_mining.triplet_loss(x, labels, mining=mining),
                            dtype)


def test_ties_resolve_to_lower_index():
    x = np.array([[0.0], [2.0], [-2.0], [3.0], [-3.0]])
    gpu = gpu_triplet(x, [0, 0, 0, 1, 1])
    assert gpu.triplets.tolist() == [[0, 1, 3], [1, 2, 3], [2, 1, 4], [3, 4, 1], [4, 3, 2]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mining", MININGS)
def test_repeated_runs_are_bit_identical(rng, dtype, mining):
    n = 300
    x = (rng.normal(size=(n, 32)) / 6).astype(dtype)
    labels = rng.integers(0, 40, size=n)
    first = gpu_triplet(x, labels, mining=mining)
    for _ in range(3):
        again = gpu_triplet(x, labels, mining=mining)
        assert again.loss == first.loss and again.terms == first.terms
        assert np.array_equal(again.grad_embedding, first.grad_embedding)
        assert np.array_equal(again.triplets, first.triplets)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, "overflow"])
@pytest.mark.parametrize("mining", MININGS)
def test_non_finite_input_as_on_the_cpu(rng, dtype, bad, mining):
    x = dyadic_embeddings(rng, 9, 3, dtype)
    if bad == "overflow":
        x[2, 0], x[5, 0] = np.sqrt(np.finfo(dtype).max) / 1.5, -np.sqrt(np.finfo(dtype).max) / 1.5
    else:
        x[4, 1] = bad
    labels = np.arange(9) % 3
    gpu = gpu_triplet(x, labels, mining=mining, check_finite=False)
    cpu = caffe_mining.triplet_loss(x, labels, mining=mining, check_finite=False)
    assert np.isnan(gpu.loss) and gpu.terms == -1 == cpu.terms
    assert np.all(np.isnan(gpu.grad_embedding))
    np.testing.assert_array_equal(gpu.triplets, cpu.triplets)


@pytest.mark.parametrize("overrides, labels", [
    (dict(mining="HARDEST"), [0, 0, 1]),
    (dict(margin=-1.0), [0, 0, 1]),
    (dict(eps=1e-50), [0, 0, 1]),
    ({}, [0, 0.5, 1]),
    ({}, [0, 1]),
])
def test_bad_arguments_raise_as_on_the_cpu(overrides, labels):
    x = np.array([[0.0], [1.0], [3.0]], np.float32)
    with pytest.raises(ValueError) as on_cpu:
        caffe_mining.triplet_loss(x, labels, **overrides)
    with pytest.raises(on_cpu.type) as on_gpu:
        caffe_mining.triplet_loss(to_device(x), labels, **overrides)
    assert str(on_gpu.value) == str(on_cpu.value)


@pytest.mark.memcheck
@pytest.mark.parametrize("n", [3, 65])
def test_memcheck_triplet(n):
    """Small and direct (_core_cuda, no CuPy): rerun under compute-sanitizer by scripts/device_check.sh."""
    from caffe_mining import _core_cuda
    rng = np.random.default_rng(n)
    for dtype in DTYPES:
        x = dyadic_embeddings(rng, n, 5, dtype)
        labels = (np.arange(n) % 2).astype(dtype)  # every anchor with a positive and a negative
        for mining, soft, squared in OPTIONS:
            kwargs = dict(mining=mining, soft_margin=soft, squared=squared)
            out = _core_cuda.triplet_loss(to_device(x), to_device(labels), **kwargs)
            cpu = _core.triplet_loss(x, labels, **kwargs)
            np.testing.assert_array_equal(host(out[2]), cpu[2])
