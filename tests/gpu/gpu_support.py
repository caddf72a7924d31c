"""Helpers of the GPU tests: device copies of NumPy inputs, host copies of device results, input builders, and
the tolerances with which a CUDA result is compared to the CPU core's.

Tolerances (GPU against the CPU core, elementwise, the absolute slack scaled by the array's largest value): the
``device_vs_host`` entries of caffe_mining.tolerances (float64 rtol 1e-10, float32 rtol 1e-4), which say what they
cover. Decisions (picks, negatives, counts, swaps) are compared exactly, on inputs built so that no two competing
values are within rounding of each other, or are exactly equal in any arithmetic (dyadic inputs).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from caffe_mining import functional
from caffe_mining.results import ContrastiveResult, HardNetResult, TripletResult
from caffe_mining.tolerances import TOLERANCES

# CAFFE_MINING_GPU_STANDIN=cpu|planted swaps caffe_mining._core_cuda for cpu_standin (see there). Here, not in a
# conftest.py: a second conftest module would shadow tests/conftest.py for `from conftest import ...`.
if os.environ.get("CAFFE_MINING_GPU_STANDIN"):
    import caffe_mining
    import cpu_standin

    sys.modules["caffe_mining._core_cuda"] = cpu_standin
    caffe_mining._core_cuda = cpu_standin


def to_device(x):
    """A NumPy array (or None) as a _core_cuda.DeviceArray (no CuPy or PyTorch needed). Imported here, not at the
    top: where it is not built the GPU tests must still be collected (and skipped)."""
    from caffe_mining import _core_cuda

    return None if x is None else _core_cuda.to_device(np.ascontiguousarray(x))


def host(x):
    """A device result (DeviceArray, CuPy array, PyTorch tensor) or host value as NumPy (None stays None)."""
    if x is None or isinstance(x, (float, int)):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def host_result(result):
    return type(result)(*[host(field) for field in result])


def assert_close(got, expected, dtype):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0))
    rtol = TOLERANCES[np.dtype(dtype).name].device_vs_host.rtol
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def gpu_contrastive(a, b, sim, sim_on_device=True, **kwargs) -> ContrastiveResult:
    """functional.mining_contrastive_loss on device copies, results back on the host."""
    sim_arg = to_device(np.asarray(sim, a.dtype)) if sim_on_device else sim
    return host_result(functional.mining_contrastive_loss(to_device(a), to_device(b), sim_arg, **kwargs))


def gpu_hardnet(a, p, labels=None, uniforms=None, **kwargs) -> HardNetResult:
    """functional.hardnet_loss on device copies (labels and uniforms too, in the features' dtype)."""
    as_dev = lambda v: None if v is None else to_device(np.asarray(v, a.dtype))  # noqa: E731
    return host_result(functional.hardnet_loss(to_device(a), to_device(p), as_dev(labels), uniforms=as_dev(uniforms),
                                               **kwargs))


def gpu_triplet(x, labels, labels_on_device=True, **kwargs) -> TripletResult:
    """functional.triplet_loss on a device copy (labels too, in the features' dtype, unless labels_on_device is
    False), results back on the host."""
    label_arg = to_device(np.asarray(labels, x.dtype)) if labels_on_device else labels
    return host_result(functional.triplet_loss(to_device(x), label_arg, **kwargs))


def assert_same_contrastive(gpu: ContrastiveResult, cpu: ContrastiveResult, dtype):
    assert gpu.picked.dtype == np.bool_ and gpu.cost.dtype == dtype
    np.testing.assert_array_equal(gpu.picked, cpu.picked)
    assert_close(gpu.cost, cpu.cost, dtype)
    assert_close(gpu.loss, cpu.loss, dtype)
    if cpu.grad_feat is not None:
        assert gpu.grad_feat.dtype == dtype and gpu.grad_feat.shape == cpu.grad_feat.shape
        assert_close(gpu.grad_feat, cpu.grad_feat, dtype)
        assert_close(gpu.grad_feat_p, cpu.grad_feat_p, dtype)


def assert_same_hardnet(gpu: HardNetResult, cpu: HardNetResult, dtype):
    assert gpu.neg_index.dtype == np.int64 and gpu.neg_count.dtype == np.int64 and gpu.neg_swapped.dtype == np.bool_
    np.testing.assert_array_equal(gpu.neg_index, cpu.neg_index)
    np.testing.assert_array_equal(gpu.neg_swapped, cpu.neg_swapped)
    np.testing.assert_array_equal(gpu.neg_count, cpu.neg_count)
    assert_close(gpu.pos_dist, cpu.pos_dist, dtype)
    assert_close(gpu.neg_dist, cpu.neg_dist, dtype)
    assert_close(gpu.loss, cpu.loss, dtype)
    if cpu.grad_anchor is not None:
        assert gpu.grad_anchor.dtype == dtype and gpu.grad_anchor.shape == cpu.grad_anchor.shape
        assert_close(gpu.grad_anchor, cpu.grad_anchor, dtype)
        assert_close(gpu.grad_positive, cpu.grad_positive, dtype)


def assert_same_triplet(gpu: TripletResult, cpu: TripletResult, dtype):
    assert gpu.triplets.dtype == np.int64 and gpu.triplets.shape == cpu.triplets.shape
    np.testing.assert_array_equal(gpu.triplets, cpu.triplets)
    assert gpu.terms == cpu.terms
    assert_close(gpu.loss, cpu.loss, dtype)
    if cpu.grad_embedding is not None:
        assert gpu.grad_embedding.dtype == dtype and gpu.grad_embedding.shape == cpu.grad_embedding.shape
        assert_close(gpu.grad_embedding, cpu.grad_embedding, dtype)


def dyadic_pairs(rng, n, dim, levels, dtype, step=0.125):
    """Contrastive pairs whose every distance is exact in any arithmetic and order: b = a + k*step along one
    coordinate (k < levels), a on a grid of step; so equal k give bit-equal costs (ties) on CPU and GPU alike.
    Exact in float32 while (levels*step)^2 has at most 24 significant bits (levels <= 4096)."""
    a = rng.integers(-8, 9, size=(n, dim)) * step
    k = rng.integers(0, levels, size=n) if levels < n else rng.permutation(n)[:n] % levels
    b = a.copy()
    b[np.arange(n), rng.integers(0, dim, size=n)] += k * step
    sim = rng.integers(0, 2, size=n).astype(np.float64)
    return a.astype(dtype), b.astype(dtype), sim


def dyadic_descriptors(rng, n, dim, dtype, step=0.25):
    """HardNet anchors and positives on a coarse grid (|x| <= 1): dot products and norms exact in float32, so
    equal distances are bit-equal on CPU and GPU (ties broken by index) and distinct ones stay ordered."""
    a = rng.integers(-4, 5, size=(n, dim)) * step
    p = rng.integers(-4, 5, size=(n, dim)) * step
    return a.astype(dtype), p.astype(dtype)


def separated_descriptors(rng, n, dim, dtype):
    """Gaussian anchors and nearby positives: distinct distances whose gaps exceed float32 rounding by far
    (redrawn until every row's candidate values are separated by 1e-4 relative)."""
    for _ in range(100):
        a = rng.normal(size=(n, dim)) / np.sqrt(dim)
        p = a + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
        d = np.sqrt(np.maximum(np.sum(a**2, 1)[:, None] + np.sum(p**2, 1)[None, :] - 2 * a @ p.T, 0) + 1e-6)
        values = np.sort(np.concatenate([d, d.T], axis=1), axis=1)
        gaps = np.diff(values, axis=1)
        if dtype == np.float64 or np.all((gaps == 0) | (gaps > 1e-4 * values[:, 1:])):
            return a.astype(dtype), p.astype(dtype)
    raise AssertionError("could not draw separated descriptors")
