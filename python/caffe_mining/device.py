"""Device arrays for the losses' functional forms: how they reach the CUDA core (caffe_mining._core_cuda).

A loss function (caffe_mining.losses.*) calls the CUDA core when its first feature array is a device array (it has
``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors, Numba...), through these helpers:

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

__all__ = ["available", "contiguous", "cuda_core", "is_device_array", "result_wrapper", "row_values",
           "unavailable_reason"]


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


def cuda_core():
    """The compiled CUDA bindings; ImportError saying why when they were not built."""
    try:
        return importlib.import_module("caffe_mining._core_cuda")
    except ImportError as error:
        raise ImportError(f"caffe_mining._core_cuda is not built ({error}); it is built by setup.py where nvcc "
                          "exists (CAFFE_MINING_CUDA=1 makes its absence an error)") from error


def unavailable_reason() -> Optional[str]:
    """None when the CUDA core can run here, else why not (not built, or no GPU)."""
    try:
        core = cuda_core()
    except ImportError as error:
        return str(error)
    return None if core.device_count() > 0 else "no GPU: the CUDA runtime sees no device"


def available() -> bool:
    """Whether the CUDA core can run here (built, and a GPU answers)."""
    return unavailable_reason() is None


def contiguous(x: Any) -> Any:
    """Features as the CUDA core takes them: C-contiguous (PyTorch tensors detached)."""
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


def row_values(values: Any, features: Any) -> Any:
    """Device values of the features' dtype stay (made contiguous); other device values go to the host."""
    if values is None or not is_device_array(values):
        return values
    if _typestr(values) == _typestr(features):
        return contiguous(values)
    if _torch_tensor(values):
        return values.detach().cpu().numpy()
    if _cupy_array(values):
        return values.get()
    return values  # another producer: _core_cuda says what it needs


def result_wrapper(features: Any) -> Callable[[Any], Any]:
    """How results are handed back: as the features' kind, else CuPy, else the DeviceArray itself."""
    if _torch_tensor(features):
        torch = sys.modules["torch"]
        return lambda a: None if a is None else torch.as_tensor(a, device=f"cuda:{a.device}")
    try:
        cupy = sys.modules.get("cupy") or importlib.import_module("cupy")
    except ImportError:
        return lambda a: a
    return lambda a: None if a is None else cupy.asarray(a)
