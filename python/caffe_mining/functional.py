"""Both losses computed by the C++ core (through caffe_mining._core), returning the reference's result types.

Same signatures as :mod:`caffe_mining.reference`, so either can be passed where a loss function is expected
(the gradient check does). float32 inputs run the core in float32, float64 in float64. Device arrays (anything
with ``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors) run the CUDA core instead and give device arrays
back (:mod:`caffe_mining.device`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffe_mining import _core, device
from caffe_mining.results import ContrastiveResult, HardNetResult

__all__ = ["hardnet_loss", "mining_contrastive_loss"]


def mining_contrastive_loss(feat: np.ndarray, feat_p: np.ndarray, sim: np.ndarray, margin: float = 1.0,
                            legacy_version: bool = False, mining_ratio: int = 1, loss_weight: float = 1.0,
                            backward: bool = True, check_finite: bool = True) -> ContrastiveResult:
    """MiningContrastiveLoss on the core; see :func:`caffe_mining.reference.mining_contrastive_loss` for the math.

    Example:
        >>> r = mining_contrastive_loss(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), [1, 0])
        >>> r.loss, r.grad_feat.dtype, r.picked.tolist()
        (0.75, dtype('float32'), [True, True])
    """
    if device.is_device_array(feat):
        return device.mining_contrastive_loss(feat, feat_p, sim, margin, legacy_version, mining_ratio, loss_weight,
                                              backward, check_finite)
    loss, grad_feat, grad_feat_p, picked, cost = _core.mining_contrastive_loss(
        feat, feat_p, sim, margin=margin, legacy_version=legacy_version, mining_ratio=mining_ratio,
        loss_weight=loss_weight, backward=backward, check_finite=check_finite)
    return ContrastiveResult(loss, grad_feat, grad_feat_p, picked, cost)


def hardnet_loss(anchor: np.ndarray, positive: np.ndarray, labels: Optional[np.ndarray] = None,
                 margin: float = 1.0, anchor_swap: bool = False, batch_reduce: str = "MIN",
                 loss_type: str = "TRIPLET_MARGIN", eps: float = 1e-6, duplicate_threshold: float = 0.008,
                 uniforms: Optional[np.ndarray] = None, loss_weight: float = 1.0, backward: bool = True,
                 check_finite: bool = True) -> HardNetResult:
    """HardNetLoss on the core; see :func:`caffe_mining.reference.hardnet_loss` for the math.

    Example:
        >>> a = np.array([[0.0, 0.0], [1.0, 0.0]]); p = np.array([[0.0, 0.1], [1.0, 0.1]])
        >>> r = hardnet_loss(a, p)
        >>> round(r.loss, 6), r.neg_index.tolist()
        (0.095017, [1, 0])
    """
    if device.is_device_array(anchor):
        return device.hardnet_loss(anchor, positive, labels, margin, anchor_swap, batch_reduce, loss_type, eps,
                                   duplicate_threshold, uniforms, loss_weight, backward, check_finite)
    loss, grad_a, grad_p, neg_index, neg_swapped, neg_count, pos_dist, neg_dist = _core.hardnet_loss(
        anchor, positive, labels, margin=margin, anchor_swap=anchor_swap, batch_reduce=batch_reduce,
        loss_type=loss_type, eps=eps, duplicate_threshold=duplicate_threshold, uniforms=uniforms,
        loss_weight=loss_weight, backward=backward, check_finite=check_finite)
    return HardNetResult(loss, grad_a, grad_p, neg_index, neg_swapped, neg_count, pos_dist, neg_dist)
