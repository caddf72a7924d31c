"""A stand-in for caffe_mining._core_cuda that runs the CPU core, so that the GPU tests' own logic (input
builders, exactness claims against the reference, message comparisons) runs without a GPU.

tests/gpu/gpu_support.py installs it when CAFFE_MINING_GPU_STANDIN is "cpu" (it should then pass: the GPU tests
compare the CPU core with itself and the reference) or "planted" (a wrong pick and a slightly wrong gradient are
planted in every result: the GPU tests must catch them). tests/test_gpu_suite_on_cpu.py runs both. It proves
nothing about the CUDA code.
"""
import os
import typing

import numpy as np

from caffe_mining import _core
from caffe_mining.losses import LOSSES


class DeviceArray:
    """A host array posing as a device array: it exposes __cuda_array_interface__, as _core_cuda's results do."""

    def __init__(self, host):
        self._host = np.array(host, copy=True)

    @property
    def __cuda_array_interface__(self):
        return dict(shape=self._host.shape, typestr=self._host.dtype.str, data=(self._host.ctypes.data, False),
                    strides=None, version=3)

    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    size = property(lambda self: self._host.size)
    device = 0

    def get(self):
        return self._host.copy()

    def __len__(self):
        return len(self._host)


def device_count():
    return 1


def to_device(host, device=0):
    return DeviceArray(np.ascontiguousarray(host))


def _feature(x, name, like):
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get") and not isinstance(x, DeviceArray):
        return x.get()  # another stand-in's device array (the benchmark test's fake CuPy)
    if not isinstance(x, DeviceArray):
        like_first = "" if name == like else f" like {like}"
        raise TypeError(f"{name} must be a device array (with __cuda_array_interface__){like_first}. Got: {x!r}")
    return x._host


def _rows(x):
    if isinstance(x, DeviceArray):
        return x._host
    return x.get() if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get") else x


def _planted():
    return os.environ.get("CAFFE_MINING_GPU_STANDIN") == "planted"


def _to_device(values):
    return tuple(DeviceArray(v) if isinstance(v, np.ndarray) else v for v in values)


def _plant_wrong_pick(picks, n):
    """A wrong mining decision, by the decisions' form: picked pairs (bool) swap their hardest pick for the last
    unpicked pair; mined triplets (T x 3) give the first one with a negative another negative; a negative per row
    (HardNet's, N > 2) gives row 0 another one, never column 0 (its own positive)."""
    picks = np.array(picks, copy=True)
    if picks.dtype == bool:
        if picks.any() and not picks.all():
            picks[np.flatnonzero(picks)[0]], picks[np.flatnonzero(~picks)[-1]] = False, True
    elif picks.ndim == 2:
        valid = np.flatnonzero(picks[:, 2] >= 0) if picks.size else []
        if len(valid):
            picks[valid[0], 2] = (picks[valid[0], 2] + 1) % n
    elif len(picks) > 2 and picks[0] >= 0:
        picks[0] = (picks[0] + 1) % len(picks) or 1
    return picks


def _standin(spec):
    """The stand-in of one loss's _core_cuda function: the CPU core on the device arrays' host copies (features
    must be device arrays, as _core_cuda asks); planted: a wrong pick in its first decision field and its first
    gradient 0.1 % off."""
    name = spec.core_fn.__name__
    fields = typing.get_type_hints(spec.core_fn)["return"]._fields  # the result's fields: _core's tuple, then pieces
    decision = fields.index(spec.decision_fields[0][0])
    gradient = fields.index(spec.grad_fields[0])
    first = spec.differentiable[0]

    def loss(*args, **kwargs):
        features = [_feature(x, bottom, first) for x, bottom in zip(args, spec.differentiable)]
        rest = [_rows(x) for x in args[len(features):]]
        out = list(getattr(_core, name)(*features, *rest, **{k: _rows(v) for k, v in kwargs.items()}))
        if _planted():
            out[decision] = _plant_wrong_pick(out[decision], len(features[0]))
            if out[gradient] is not None:
                out[gradient] = out[gradient] * (1 + 1e-3)
        return _to_device(out)

    loss.__name__ = loss.__qualname__ = name
    return loss


# One stand-in per loss of the registry, named as _core_cuda's function (the spec's core function's name).
globals().update({spec.core_fn.__name__: _standin(spec) for spec in LOSSES.values()})
