"""A stand-in for caffe_mining._core_cuda that runs the CPU core, so that the GPU tests' own logic (input
builders, exactness claims against the reference, message comparisons) runs without a GPU.

tests/gpu/gpu_support.py installs it when CAFFE_MINING_GPU_STANDIN is "cpu" (it should then pass: the GPU tests
compare the CPU core with itself and the reference) or "planted" (a wrong pick and a slightly wrong gradient are
planted in every result: the GPU tests must catch them). tests/test_gpu_suite_on_cpu.py runs both. It proves
nothing about the CUDA code.
"""
import os

import numpy as np

from caffe_mining import _core


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


def mining_contrastive_loss(feat, feat_p, sim, **kwargs):
    out = list(_core.mining_contrastive_loss(_feature(feat, "feat", "feat"), _feature(feat_p, "feat_p", "feat"),
                                             _rows(sim), **kwargs))
    picked = out[3]
    if _planted() and picked.any() and not picked.all():  # the hardest pick swapped for the last unpicked pair
        picked[np.flatnonzero(picked)[0]], picked[np.flatnonzero(~picked)[-1]] = False, True
    if _planted() and out[1] is not None:
        out[1] = out[1] * (1 + 1e-3)
    return _to_device(out)


def hardnet_loss(anchor, positive, labels=None, **kwargs):
    uniforms = kwargs.pop("uniforms", None)
    out = list(_core.hardnet_loss(_feature(anchor, "anchor", "anchor"), _feature(positive, "positive", "anchor"),
                                  _rows(labels), uniforms=_rows(uniforms), **kwargs))
    if _planted() and len(out[3]) > 2 and out[3][0] >= 0:  # row 0 takes another negative
        out[3][0] = (out[3][0] + 1) % len(out[3]) or 1
    if _planted() and out[1] is not None:
        out[1] = out[1] * (1 + 1e-3)
    return _to_device(out)


def triplet_loss(embedding, labels, **kwargs):
    out = list(_core.triplet_loss(_feature(embedding, "embedding", "embedding"), _rows(labels), **kwargs))
    triplets = out[2]
    valid = np.flatnonzero(triplets[:, 2] >= 0) if triplets.size else []
    if _planted() and len(valid):  # the first mined triplet takes another negative
        row = valid[0]
        triplets[row, 2] = (triplets[row, 2] + 1) % len(_rows(labels))
    if _planted() and out[1] is not None:
        out[1] = out[1] * (1 + 1e-3)
    return _to_device(out)


def margin_loss(embedding, labels, beta=None, **kwargs):
    out = list(_core.margin_loss(_feature(embedding, "embedding", "embedding"), _rows(labels), _rows(beta),
                                 **kwargs))
    if _planted() and len(out[3]) > 0:  # the first triplet takes another negative
        out[3] = out[3].copy()
        out[3][0, 2] = (out[3][0, 2] + 1) % len(_rows(labels))
    if _planted() and out[1] is not None:
        out[1] = out[1] * (1 + 1e-3)
    return _to_device(out)
