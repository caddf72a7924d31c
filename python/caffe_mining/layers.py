"""pycaffe Python layers for the losses, running the same C++ core as the Caffe layers (through _core).

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
(margin, legacy_version, mining_ratio), hardnet_loss_param (margin, anchor_swap, batch_reduce, loss_type, eps,
duplicate_threshold, seed) or margin_loss_param (margin, beta_init, nu, num_classes, negatives_per_positive,
sampler, cutoff, nonzero_loss_cutoff, eps, seed); unknown keys and bad values raise ValueError naming them.

Bottoms, tops and the math are those of the C++ layers (see caffe_mining.reference). HardNetLossLayer with RANDOM
and a seed draws the same negatives as the C++ layer with that seed (caffe_mining.sampling.LayerUniforms); without
a seed it draws from the OS, where the C++ layer would use Caffe's RNG.

Every layer is a :class:`LossLayer` driven by its loss's spec (caffe_mining.losses). This is the only module of
the package that imports caffe.
"""
from __future__ import annotations

import caffe
import numpy as np

from caffe_mining.losses import LOSSES
from caffe_mining.losses.spec import LossSpec
from caffe_mining.options import parse_param_str
from caffe_mining.sampling import LayerUniforms

__all__ = ["HardNetLossLayer", "LossLayer", "MarginLossLayer", "MiningContrastiveLossLayer"]


def _features(blob, name: str) -> np.ndarray:
    """A bottom's data as (N, D): Caffe's (N, D) or (N, D, 1, 1)."""
    shape = blob.data.shape
    if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
        return blob.data.reshape(shape[0], shape[1])
    raise ValueError(f"{name} must have shape (N, D) or (N, D, 1, 1). Got: {shape}")


class LossLayer(caffe.Layer):
    """A loss of caffe_mining.losses as a Python layer; a subclass names its ``spec``.

    bottom: the spec's differentiable features (N x D or N x D x 1 x 1, all of one shape), then its label bottom
    (N values; optional where the spec says so). top: the scalar loss; where the spec has a decisions top, an
    optional second top (N x columns) with the decision fields per row. param_str: the options' fields.
    """

    spec: LossSpec

    def setup(self, bottom, top):
        spec, name = self.spec, self.spec.python_layer
        self.options = parse_param_str(self.param_str, spec.options_class)
        features = len(spec.differentiable)
        if spec.label_required:
            counts, listed = (features + 1,), ", ".join(spec.bottoms)
        else:
            counts, listed = (features, features + 1), f"{', '.join(spec.differentiable)}[, {spec.label_bottom}]"
        if len(bottom) not in counts:
            raise ValueError(f"{name} takes {' or '.join(map(str, counts))} bottoms ({listed}). Got: {len(bottom)}")
        if spec.decisions_top is None and len(top) != 1:
            raise ValueError(f"{name} has 1 top (the loss). Got: {len(top)}")
        if spec.decisions_top is not None and len(top) not in (1, 2):
            raise ValueError(f"{name} has 1 or 2 tops (loss[, {spec.decisions_top}]). Got: {len(top)}")
        self.uniforms = LayerUniforms(self.options.seed) if self.options.draws_uniforms else None
        self.draws = None
        self.warned = False

    def reshape(self, bottom, top):
        spec, name = self.spec, self.spec.python_layer
        first = spec.differentiable[0]
        _features(bottom[0], first)
        for index, other in enumerate(spec.differentiable[1:], 1):
            if bottom[index].data.shape != bottom[0].data.shape:
                raise ValueError(f"{other} must have the shape of {first} {bottom[0].data.shape}. "
                                 f"Got: {bottom[index].data.shape}")
        n = bottom[0].data.shape[0]
        if n < spec.min_n:
            raise ValueError(f"{name} needs N >= {spec.min_n} pairs. Got: N = {n}")
        if len(bottom) > len(spec.differentiable) and bottom[-1].data.size != n:
            raise ValueError(f"{spec.label_bottom} must hold N = {n} values (one per pair). "
                             f"Got: {bottom[-1].data.shape}")
        warning = self.options.batch_warning(n)
        if warning and not self.warned:
            print(f"{name}: {warning}")
            self.warned = True
        top[0].reshape()
        if len(top) == 2 and spec.decisions_table is None:  # a table's rows are known after the forward
            top[1].reshape(n, len(spec.decision_fields))

    def _evaluate(self, bottom, loss_weight: float, backward: bool):
        spec = self.spec
        inputs = {b: _features(bottom[i], b) for i, b in enumerate(spec.differentiable)}
        if len(bottom) > len(spec.differentiable):
            inputs[spec.label_bottom] = bottom[-1].data.reshape(-1)
        # check_finite False, like the C++ layer: NaN flows into the loss instead of stopping training.
        return spec.call(spec.core_fn, self.options, inputs, uniforms=self.draws, loss_weight=loss_weight,
                         backward=backward, check_finite=False)

    def forward(self, bottom, top):
        if self.uniforms is not None:
            self.draws = self.uniforms.next(bottom[0].data.shape[0])  # kept for the backward pass
        result = self._evaluate(bottom, 1.0, backward=False)
        top[0].data[...] = result.loss
        self._write_decisions(top, result)

    def _write_decisions(self, top, result):
        """The optional second top: the decisions of this pass (reshaped here, as a table's rows are known only
        after the forward)."""
        if len(top) == 2:
            table = self.spec.decisions_top_data(self.options, result)
            top[1].reshape(*table.shape)
            top[1].data[...] = table

    def backward(self, top, propagate_down, bottom):
        features = len(self.spec.differentiable)
        if not any(propagate_down[:features]):
            return
        # The core again, with the top's diff as loss weight: the same decisions (same inputs), exact scaling.
        result = self._evaluate(bottom, float(top[0].diff), backward=True)
        for index, grad in enumerate(self.spec.gradients(result)):
            if propagate_down[index]:
                bottom[index].diff[...] = grad.reshape(bottom[index].diff.shape)
        if len(propagate_down) > features and propagate_down[features]:
            bottom[features].diff[...] = 0  # the labels have no gradient


class MiningContrastiveLossLayer(LossLayer):
    """MiningContrastiveLoss: bottoms feat, feat_p (N x D), sim (N values, 1 similar / 0 dissimilar); one top."""

    spec = LOSSES["MiningContrastiveLoss"]


class HardNetLossLayer(LossLayer):
    """HardNetLoss: bottoms anchor, positive (N x D), optional label (N class ids); tops the loss and, optional,
    N x 2 negatives: per row the chosen (MIN, RANDOM) or hardest (AVERAGE) negative j, -1 if none, and 1 if its
    distance is the swapped D_ji."""

    spec = LOSSES["HardNetLoss"]


class TripletLossLayer(LossLayer):
    """TripletLoss: bottoms embedding (N x D), label (N integer class ids); tops the loss and, optional, the mined
    triplets (T x 3 rows anchor, positive, negative: BATCH_HARD per anchor, SEMI_HARD per positive pair, -1 where
    none) or, for BATCH_ALL, 1 x 1 the number of terms with loss > 0."""

    spec = LOSSES["TripletLoss"]


class MarginLossLayer(LossLayer):
    """MarginLoss: bottoms embedding (N x D, L2-normalised rows) and label (N integer class ids); tops the loss
    and, optional, this pass's triplets (T x 3 rows anchor, positive, negative). beta is the layer's blob
    (``self.blobs[0]``: one value, or num_classes), filled with beta_init at set-up and learnt by the solver (its
    diff accumulates); the draws are keyed by seed and this layer's forward-pass count, as in the C++ layer."""

    spec = LOSSES["MarginLoss"]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        betas = max(1, self.options.num_classes)
        if len(self.blobs) == 0:
            self.blobs.add_blob(betas)
            self.blobs[0].data[...] = self.options.beta_init
        elif self.blobs[0].data.size != betas:
            raise ValueError(f"MarginLossLayer: beta must hold max(1, num_classes) = {betas} values. "
                             f"Got: {self.blobs[0].data.shape}")
        self.passes = 0
        self.draw_pass = 0

    def _evaluate(self, bottom, loss_weight: float, backward: bool):
        return self.spec.core_fn(_features(bottom[0], "embedding"), bottom[1].data.reshape(-1),
                                 self.blobs[0].data.reshape(-1).copy(), **self.options.loss_kwargs(),
                                 iteration=self.draw_pass, loss_weight=loss_weight, backward=backward,
                                 check_finite=False)

    def forward(self, bottom, top):
        self.draw_pass = self.passes
        self.passes += 1
        result = self._evaluate(bottom, 1.0, backward=False)
        top[0].data[...] = result.loss
        self._write_decisions(top, result)  # this pass's triplets, T x 3

    def backward(self, top, propagate_down, bottom):
        # The core again on the forward's pass number: the same triplets, exact scaling.
        result = self._evaluate(bottom, float(top[0].diff), backward=True)
        if propagate_down[0]:
            bottom[0].diff[...] = result.grad_embedding.reshape(bottom[0].diff.shape)
        if len(propagate_down) > 1 and propagate_down[1]:
            bottom[1].diff[...] = 0
        self.blobs[0].diff[...] += result.grad_beta.reshape(self.blobs[0].diff.shape)
