"""The losses computed by the C++ core (through caffe_mining._core), returning the reference's result types.

Same signatures as :mod:`caffe_mining.reference`, so either can be passed where a loss function is expected
(the gradient check does). float32 inputs run the core in float32, float64 in float64. Device arrays (anything
with ``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors) run the CUDA core instead and give device arrays
back (:mod:`caffe_mining.device`). Each function lives in its loss's module (:mod:`caffe_mining.losses`).
"""
from caffe_mining.losses import LOSSES

# Every registered loss's functional form, by its name (its spec's core function: e.g. mining_contrastive_loss).
_FUNCTIONS = {spec.core_fn.__name__: spec.core_fn for spec in LOSSES.values()}
globals().update(_FUNCTIONS)

__all__ = sorted(_FUNCTIONS)
