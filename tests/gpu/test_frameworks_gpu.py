"""caffe_mining.functional with CuPy arrays and PyTorch CUDA tensors: results of the input's kind, on its device,
equal to the DeviceArray path; non-contiguous inputs, tensors that require grad, labels of other dtypes."""
import numpy as np
import pytest
from gpu_support import assert_same_contrastive, assert_same_hardnet, dyadic_descriptors, dyadic_pairs, host

import caffe_mining

pytestmark = pytest.mark.gpu


def test_cupy_in_cupy_out(rng):
    cupy = pytest.importorskip("cupy")
    a, b, sim = dyadic_pairs(rng, 40, 6, levels=10, dtype=np.float32)
    # Non-contiguous views: transposed copies.
    ca, cb = cupy.asarray(np.ascontiguousarray(a.T)).T, cupy.asarray(np.ascontiguousarray(b.T)).T
    assert not ca.flags.c_contiguous
    r = caffe_mining.mining_contrastive_loss(ca, cb, cupy.asarray(sim), mining_ratio=3)
    assert isinstance(r.grad_feat, cupy.ndarray) and isinstance(r.picked, cupy.ndarray)
    assert r.picked.dtype == np.bool_
    assert_same_contrastive(type(r)(*[host(x) for x in r]), caffe_mining.mining_contrastive_loss(a, b, sim,
                                                                                                 mining_ratio=3),
                            np.float32)
    pa, pp = dyadic_descriptors(rng, 30, 8, np.float32)
    labels = rng.integers(0, 4, size=30)
    h = caffe_mining.hardnet_loss(cupy.asarray(pa), cupy.asarray(pp), cupy.asarray(labels), anchor_swap=True)
    assert isinstance(h.neg_index, cupy.ndarray) and h.neg_index.dtype == np.int64
    assert_same_hardnet(type(h)(*[host(x) for x in h]), caffe_mining.hardnet_loss(pa, pp, labels, anchor_swap=True),
                        np.float32)


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    a, p = dyadic_descriptors(rng, 30, 8, np.float64)
    ta = torch.tensor(a, device="cuda", requires_grad=True)
    tp = torch.tensor(np.ascontiguousarray(p.T), device="cuda").t()
    labels = torch.tensor(rng.integers(0, 4, size=30), device="cuda")
    u = rng.random(30)
    h = caffe_mining.hardnet_loss(ta, tp, labels, batch_reduce="RANDOM", uniforms=torch.tensor(u, device="cuda"))
    assert isinstance(h.grad_anchor, torch.Tensor) and h.grad_anchor.is_cuda and h.grad_anchor.dtype == torch.float64
    assert h.neg_index.dtype == torch.int64 and h.neg_swapped.dtype == torch.bool
    cpu = caffe_mining.hardnet_loss(a, p, labels.cpu().numpy(), batch_reduce="RANDOM", uniforms=u)
    assert_same_hardnet(type(h)(*[host(x) for x in h]), cpu, np.float64)
    x, y, sim = dyadic_pairs(rng, 20, 4, levels=8, dtype=np.float32)
    r = caffe_mining.mining_contrastive_loss(torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda"),
                                             torch.tensor(sim, device="cuda"), mining_ratio=2)
    assert isinstance(r.cost, torch.Tensor) and r.cost.dtype == torch.float32
    assert_same_contrastive(type(r)(*[host(v) for v in r]), caffe_mining.mining_contrastive_loss(x, y, sim,
                                                                                                 mining_ratio=2),
                            np.float32)


def test_results_outlive_their_inputs_and_are_device_memory(rng):
    from caffe_mining import _core_cuda
    a, b, sim = dyadic_pairs(rng, 10, 3, levels=5, dtype=np.float64)
    raw = _core_cuda.mining_contrastive_loss(_core_cuda.to_device(a), _core_cuda.to_device(b),
                                             _core_cuda.to_device(sim))
    grad = raw[1]
    interface = grad.__cuda_array_interface__
    assert interface["shape"] == (10, 3) and interface["typestr"] == "<f8" and interface["data"][0] != 0
    np.testing.assert_array_equal(grad.get(), caffe_mining.mining_contrastive_loss(a, b, sim).grad_feat)
