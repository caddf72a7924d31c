"""The losses computed by the C++ core (through caffe_mining._core), returning the reference's result types.

Same signatures as :mod:`caffe_mining.reference`, so either can be passed where a loss function is expected
(the gradient check does). float32 inputs run the core in float32, float64 in float64. Device arrays (anything
with ``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors) run the CUDA core instead and give device arrays
back (:mod:`caffe_mining.device`). Each function lives in its loss's module (:mod:`caffe_mining.losses`).
"""
from caffe_mining.losses.contrastive import mining_contrastive_loss
from caffe_mining.losses.hardnet import hardnet_loss
from caffe_mining.losses.margin import margin_loss
from caffe_mining.losses.triplet import triplet_loss

__all__ = ["hardnet_loss", "margin_loss", "mining_contrastive_loss", "triplet_loss"]
