"""MarginLoss on the CUDA core (caffe_mining._core_cuda) against the CPU core and the NumPy reference: both samplers,
one and per-class beta, nu, several draws per positive, the cutoff disabled, singletons, float32 and float64; the
same triplets as the CPU for the same seed and iteration (margin.hpp: the draw is a pure function of them); NaN
input and bad labels. Tolerances: see gpu_support."""
import numpy as np
import pytest
from gpu_support import assert_close, host_result, to_device

import caffe_mining
from caffe_mining import reference

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
CASES = [dict(), dict(sampler="UNIFORM", nu=0.1), dict(negatives_per_positive=3, seed=7, iteration=11),
         dict(num_classes=6, beta=np.linspace(0.9, 1.3, 6)), dict(nonzero_loss_cutoff=0.0, cutoff=0.3)]


def pk_batch(rng, dim, dtype):
    """6 classes of 4 rows and 3 singletons, L2-normalised."""
    labels = np.concatenate([np.repeat(np.arange(6), 4), np.arange(6, 9)])
    x = rng.normal(size=(9, dim))[labels] + 1.2 * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype), labels.astype(np.float64)


def gpu_margin(x, labels, beta=None, **kwargs):
    as_dev = lambda v: None if v is None else to_device(np.asarray(v, x.dtype))  # noqa: E731
    return host_result(caffe_mining.margin_loss(to_device(x), as_dev(labels), as_dev(beta), **kwargs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [3, 64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "defaults")
def test_every_option_margin_against_cpu_and_reference(rng, dtype, dim, case):
    x, labels = pk_batch(rng, dim, dtype)
    if case.get("num_classes"):
        labels = labels % case["num_classes"]
    gpu = gpu_margin(x, labels, loss_weight=0.7, **case)
    cpu = caffe_mining.margin_loss(x, labels, loss_weight=0.7, **case)
    np.testing.assert_array_equal(gpu.triplets, cpu.triplets)
    assert gpu.hinge_count == cpu.hinge_count and len(cpu.triplets) > 0
    assert gpu.grad_embedding.dtype == dtype and gpu.grad_beta.dtype == dtype
    for field in ("loss", "pos_dist", "neg_dist", "grad_embedding", "grad_beta"):
        assert_close(getattr(gpu, field), getattr(cpu, field), dtype)
    ref = reference.margin_loss(x.astype(np.float64), labels, triplets=gpu.triplets, loss_weight=0.7, **case)
    assert_close(gpu.loss, ref.loss, dtype)
    assert_close(gpu.grad_embedding, ref.grad_embedding, dtype)


def test_margin_nan_input_gives_nan_and_no_triplet(rng):
    x, labels = pk_batch(rng, 8, np.float32)
    x[5, 2] = np.nan
    gpu = gpu_margin(x, labels, check_finite=False)
    assert np.isnan(gpu.loss) and gpu.triplets.shape == (0, 3)
    assert np.all(np.isnan(gpu.grad_embedding)) and np.all(np.isnan(gpu.grad_beta))


def test_margin_bad_labels_same_message(rng):
    x, labels = pk_batch(rng, 8, np.float64)
    labels[3] = 0.5
    with pytest.raises(ValueError) as on_cpu:
        caffe_mining.margin_loss(x, labels)
    with pytest.raises(ValueError) as on_gpu:
        gpu_margin(x, labels)
    assert str(on_gpu.value) == str(on_cpu.value)
