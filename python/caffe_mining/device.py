"""Both losses on device arrays: the CUDA core (caffe_mining._core_cuda) behind caffe_mining.functional.

caffe_mining.functional sends a call here when its first feature array is a device array (it has
``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors, Numba...). What this module adds to _core_cuda:

- CuPy and PyTorch features are made C-contiguous first (PyTorch tensors are detached: the loss gives its own
  gradients), as _core copies non-contiguous NumPy arrays;
- per-row values (sim, labels, uniforms) that are device arrays of another dtype than the features are copied
  to the host, where _core_cuda converts and checks them exactly as _core does;
- the arrays of the result are of the features' kind: PyTorch tensors for PyTorch, else CuPy arrays where CuPy
  is importable, else _core_cuda.DeviceArray (each with __cuda_array_interface__; ``.get()`` copies to NumPy).
  They share the module's device memory (no copy).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Optional

from caffe_mining.results import ContrastiveResult, HardNetResult

__all__ = ["available", "hardnet_loss", "is_device_array", "mining_contrastive_loss", "unavailable_reason"]


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _cupy_array(x: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def is_device_array(x: Any) -> bool:
    """Whether x lives on a CUDA device (PyTorch tensors are asked directly: their interface refuses
    tensors that require grad)."""
    if _torch_tensor(x):
        return bool(x.is_cuda)
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # a property that raises is a device array that cannot be read as such
        return True


def _core_cuda():
    """The compiled CUDA bindings; ImportError saying why when they were not built."""
    try:
        return importlib.import_module("caffe_mining._core_cuda")
    except ImportError as error:
        raise ImportError(f"caffe_mining._core_cuda is not built ({error}); it is built by setup.py where nvcc "
                          "exists (CAFFE_MINING_CUDA=1 makes its absence an error)") from error


def unavailable_reason() -> Optional[str]:
    """None when the CUDA core can run here, else why not (not built, or no GPU)."""
    try:
        core = _core_cuda()
    except ImportError as error:
        return str(error)
    return None if core.device_count() > 0 else "no GPU: the CUDA runtime sees no device"


def available() -> bool:
    """Whether the CUDA core can run here (built, and a GPU answers)."""
    return unavailable_reason() is None


def _features(x: Any) -> Any:
    if _torch_tensor(x):
        return x.detach().contiguous()
    if _cupy_array(x):
        return sys.modules["cupy"].ascontiguousarray(x)
    return x


def _typestr(x: Any) -> Optional[str]:
    if _torch_tensor(x):
        return {"torch.float32": "<f4", "torch.float64": "<f8"}.get(str(x.dtype), str(x.dtype))
    try:
        return x.__cuda_array_interface__["typestr"]
    except Exception:
        return None


def _row_values(values: Any, features: Any) -> Any:
    """Device values of the features' dtype stay (made contiguous); other device values go to the host."""
    if values is None or not is_device_array(values):
        return values
    if _typestr(values) == _typestr(features):
        return _features(values)
    if _torch_tensor(values):
        return values.detach().cpu().numpy()
    if _cupy_array(values):
        return values.get()
    return values  # another producer: _core_cuda says what it needs


def _wrapper_for(features: Any) -> Callable[[Any], Any]:
    """How results are handed back: as the features' kind, else CuPy, else the DeviceArray itself."""
    if _torch_tensor(features):
        torch = sys.modules["torch"]
        return lambda a: None if a is None else torch.as_tensor(a, device=f"cuda:{a.device}")
    try:
        cupy = sys.modules.get("cupy") or importlib.import_module("cupy")
    except ImportError:
        return lambda a: a
    return lambda a: None if a is None else cupy.asarray(a)


def mining_contrastive_loss(feat: Any, feat_p: Any, sim: Any, margin: float = 1.0, legacy_version: bool = False,
                            mining_ratio: int = 1, loss_weight: float = 1.0, backward: bool = True,
                            check_finite: bool = True) -> ContrastiveResult:
    """caffe_mining.functional.mining_contrastive_loss on the CUDA core (device arrays in, device arrays out)."""
    feat, feat_p = _features(feat), _features(feat_p)
    loss, grad_feat, grad_feat_p, picked, cost = _core_cuda().mining_contrastive_loss(
        feat, feat_p, _row_values(sim, feat), margin=margin, legacy_version=legacy_version,
        mining_ratio=mining_ratio, loss_weight=loss_weight, backward=backward, check_finite=check_finite)
    wrap = _wrapper_for(feat)
    return ContrastiveResult(loss, wrap(grad_feat), wrap(grad_feat_p), wrap(picked), wrap(cost))


def hardnet_loss(anchor: Any, positive: Any, labels: Any = None, margin: float = 1.0, anchor_swap: bool = False,
                 batch_reduce: str = "MIN", loss_type: str = "TRIPLET_MARGIN", eps: float = 1e-6,
                 duplicate_threshold: float = 0.008, uniforms: Any = None, loss_weight: float = 1.0,
                 backward: bool = True, check_finite: bool = True) -> HardNetResult:
    """caffe_mining.functional.hardnet_loss on the CUDA core (device arrays in, device arrays out)."""
    anchor, positive = _features(anchor), _features(positive)
    loss, grad_a, grad_p, neg_index, neg_swapped, neg_count, pos_dist, neg_dist = _core_cuda().hardnet_loss(
        anchor, positive, _row_values(labels, anchor), margin=margin, anchor_swap=anchor_swap,
        batch_reduce=batch_reduce, loss_type=loss_type, eps=eps, duplicate_threshold=duplicate_threshold,
        uniforms=_row_values(uniforms, anchor), loss_weight=loss_weight, backward=backward,
        check_finite=check_finite)
    wrap = _wrapper_for(anchor)
    return HardNetResult(loss, wrap(grad_a), wrap(grad_p), wrap(neg_index), wrap(neg_swapped), wrap(neg_count),
                         wrap(pos_dist), wrap(neg_dist))
