"""pycaffe Python layers for both losses, running the same C++ core as the Caffe layers (through _core).

Use them in any pycaffe built with WITH_PYTHON_LAYER, no Caffe rebuild needed. A Python layer is not a Caffe
LossLayer, so give its loss top a ``loss_weight`` (Caffe's default for Python layers is 0: no gradient)::

    layer {
      name: "loss" type: "Python"
      bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss"
      loss_weight: 1
      python_param {
        module: "caffe_mining.layers" layer: "MiningContrastiveLossLayer"
        param_str: '{"margin": 1.0, "mining_ratio": 4}'
      }
    }

``param_str`` is a JSON object or a Python dict literal with the fields of contrastive_loss_param
(margin, legacy_version, mining_ratio) or hardnet_loss_param (margin, anchor_swap, batch_reduce, loss_type, eps,
duplicate_threshold, seed); unknown keys and bad values raise ValueError naming them.

Bottoms, tops and the math are those of the C++ layers (see caffe_mining.reference). HardNetLossLayer with RANDOM
and a seed draws the same negatives as the C++ layer with that seed (caffe_mining.sampling.LayerUniforms); without
a seed it draws from the OS, where the C++ layer would use Caffe's RNG.

This is the only module of the package that imports caffe.
"""
from __future__ import annotations

import caffe
import numpy as np

from caffe_mining.functional import hardnet_loss, mining_contrastive_loss
from caffe_mining.options import ContrastiveOptions, HardNetOptions, parse_param_str
from caffe_mining.sampling import LayerUniforms

__all__ = ["HardNetLossLayer", "MiningContrastiveLossLayer"]


def _features(blob, name: str) -> np.ndarray:
    """A bottom's data as (N, D): Caffe's (N, D) or (N, D, 1, 1)."""
    shape = blob.data.shape
    if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
        return blob.data.reshape(shape[0], shape[1])
    raise ValueError(f"{name} must have shape (N, D) or (N, D, 1, 1). Got: {shape}")


def _check_feature_pair(bottom, first: str, second: str) -> int:
    """Checks bottoms 0 and 1; returns N."""
    _features(bottom[0], first)
    if bottom[1].data.shape != bottom[0].data.shape:
        raise ValueError(f"{second} must have the shape of {first} {bottom[0].data.shape}. "
                         f"Got: {bottom[1].data.shape}")
    return bottom[0].data.shape[0]


def _check_count(blob, name: str, n: int) -> None:
    if blob.data.size != n:
        raise ValueError(f"{name} must hold N = {n} values (one per pair). Got: {blob.data.shape}")


class MiningContrastiveLossLayer(caffe.Layer):
    """MiningContrastiveLoss as a Python layer.

    bottom: feat (N x D or N x D x 1 x 1), feat_p (same shape), sim (N values, 1 similar / 0 dissimilar).
    top: the scalar loss. param_str: contrastive_loss_param's fields.
    """

    def setup(self, bottom, top):
        self.options = parse_param_str(self.param_str, ContrastiveOptions)
        if len(bottom) != 3:
            raise ValueError(f"MiningContrastiveLossLayer takes 3 bottoms (feat, feat_p, sim). Got: {len(bottom)}")
        if len(top) != 1:
            raise ValueError(f"MiningContrastiveLossLayer has 1 top (the loss). Got: {len(top)}")
        self.warned_no_pairs = False

    def reshape(self, bottom, top):
        n = _check_feature_pair(bottom, "feat", "feat_p")
        _check_count(bottom[2], "sim", n)
        if n // self.options.mining_ratio == 0 and not self.warned_no_pairs:
            print(f"MiningContrastiveLossLayer: mining_ratio {self.options.mining_ratio} > N = {n}: "
                  "no pair is picked, the loss and gradients are 0")
            self.warned_no_pairs = True
        top[0].reshape()

    def _evaluate(self, bottom, loss_weight: float, backward: bool):
        return mining_contrastive_loss(
            _features(bottom[0], "feat"), _features(bottom[1], "feat_p"), bottom[2].data.reshape(-1),
            margin=self.options.margin, legacy_version=self.options.legacy_version,
            mining_ratio=self.options.mining_ratio, loss_weight=loss_weight, backward=backward,
            check_finite=False)  # like the C++ layer: NaN flows into the loss instead of stopping training

    def forward(self, bottom, top):
        top[0].data[...] = self._evaluate(bottom, 1.0, backward=False).loss

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        # The core again, with the top's diff as loss weight: the same decisions (same inputs), exact scaling.
        result = self._evaluate(bottom, float(top[0].diff), backward=True)
        for index, grad in ((0, result.grad_feat), (1, result.grad_feat_p)):
            if propagate_down[index]:
                bottom[index].diff[...] = grad.reshape(bottom[index].diff.shape)
        if len(propagate_down) > 2 and propagate_down[2]:
            bottom[2].diff[...] = 0  # the labels have no gradient


class HardNetLossLayer(caffe.Layer):
    """HardNetLoss as a Python layer.

    bottom: anchor (N x D or N x D x 1 x 1), positive (same shape), optional label (N class ids).
    top: the scalar loss; optional second top (N x 2): per row the chosen (MIN, RANDOM) or hardest (AVERAGE)
    negative j, -1 if none, and 1 if its distance is the swapped D_ji. param_str: hardnet_loss_param's fields.
    """

    def setup(self, bottom, top):
        self.options = parse_param_str(self.param_str, HardNetOptions)
        if len(bottom) not in (2, 3):
            raise ValueError(f"HardNetLossLayer takes 2 or 3 bottoms (anchor, positive[, label]). Got: {len(bottom)}")
        if len(top) not in (1, 2):
            raise ValueError(f"HardNetLossLayer has 1 or 2 tops (loss[, negatives]). Got: {len(top)}")
        self.uniforms = LayerUniforms(self.options.seed) if self.options.batch_reduce == "RANDOM" else None
        self.draws = None

    def reshape(self, bottom, top):
        n = _check_feature_pair(bottom, "anchor", "positive")
        if n < 2:
            raise ValueError(f"HardNetLossLayer needs N >= 2 pairs. Got: N = {n}")
        if len(bottom) == 3:
            _check_count(bottom[2], "label", n)
        top[0].reshape()
        if len(top) == 2:
            top[1].reshape(n, 2)

    def _evaluate(self, bottom, loss_weight: float, backward: bool):
        option_fields = dict(margin=self.options.margin, anchor_swap=self.options.anchor_swap,
                             batch_reduce=self.options.batch_reduce, loss_type=self.options.loss_type,
                             eps=self.options.eps, duplicate_threshold=self.options.duplicate_threshold)
        labels = bottom[2].data.reshape(-1) if len(bottom) == 3 else None
        return hardnet_loss(_features(bottom[0], "anchor"), _features(bottom[1], "positive"), labels,
                            uniforms=self.draws, loss_weight=loss_weight, backward=backward, check_finite=False,
                            **option_fields)

    def forward(self, bottom, top):
        if self.uniforms is not None:
            self.draws = self.uniforms.next(bottom[0].data.shape[0])  # kept for the backward pass
        result = self._evaluate(bottom, 1.0, backward=False)
        top[0].data[...] = result.loss
        if len(top) == 2:
            top[1].data[:, 0] = result.neg_index
            top[1].data[:, 1] = result.neg_swapped

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        result = self._evaluate(bottom, float(top[0].diff), backward=True)
        for index, grad in ((0, result.grad_anchor), (1, result.grad_positive)):
            if propagate_down[index]:
                bottom[index].diff[...] = grad.reshape(bottom[index].diff.shape)
        if len(propagate_down) > 2 and propagate_down[2]:
            bottom[2].diff[...] = 0
