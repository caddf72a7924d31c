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

``param_str`` is a JSON object or a Python dict literal with the fields of the loss's proto message (its options
class in caffe_mining.losses, e.g. ``contrastive_loss_param``'s margin, legacy_version, mining_ratio); unknown keys and
bad values raise ValueError naming them.

Bottoms, tops and the math are those of the C++ layers (see caffe_mining.reference); each layer's docstring says its
own. A loss that draws per-row uniforms (its options' ``draws_uniforms``) with a seed draws the same as the C++ layer
with that seed (caffe_mining.sampling.LayerUniforms); without a seed it draws from the OS, where the C++ layer would
use Caffe's RNG. A loss whose core draws per pass (``draws_per_pass``) is keyed by this layer's forward-pass count,
as in the C++ layer. A loss with learnable blobs (its spec's ``learned_blobs``) has them in ``self.blobs``, filled
at set-up and learnt by the solver.

Every layer is a :class:`LossLayer` driven by its loss's spec (caffe_mining.losses), one line each below. This is
the only module of the package that imports caffe.
"""
from __future__ import annotations

import caffe
import numpy as np

from caffe_mining.losses import LOSSES
from caffe_mining.losses.spec import LossSpec
from caffe_mining.options import parse_param_str
from caffe_mining.sampling import LayerUniforms

__all__ = ["LossLayer", *sorted(spec.python_layer for spec in LOSSES.values())]


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
    optional second top (N x columns) with the decision fields per row. param_str: the options' fields. blobs: the
    spec's learned blobs.
    """

    spec: LossSpec

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__ and cls.__dict__.get("__doc__") is None:  # a one-line layer: its spec's words
            cls.__doc__ = cls.spec.layer_doc or f"{cls.spec.type_name}: see its spec ({cls.spec.reference})."

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
        self._setup_learned_blobs()
        self.passes = 0  # forward passes so far; a loss that draws per pass keys its draws by the count
        self.draw_pass = 0

    def _setup_learned_blobs(self):
        """The spec's learned blobs: created and filled from the options, or (loaded from a model) checked."""
        learned = self.spec.learned_blobs
        if not learned:
            return
        if len(self.blobs) == 0:
            for blob in learned:
                self.blobs.add_blob(blob.count(self.options))
                self.blobs[len(self.blobs) - 1].data[...] = blob.fill(self.options)
            return
        for index, blob in enumerate(learned):
            count = blob.count(self.options)
            if self.blobs[index].data.size != count:
                raise ValueError(f"{self.spec.python_layer}: {blob.name} must hold {blob.count_text} = {count} "
                                 f"values. Got: {self.blobs[index].data.shape}")

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
        extra = {blob.name: self.blobs[index].data.reshape(-1).copy()
                 for index, blob in enumerate(spec.learned_blobs)}
        if getattr(self.options, "draws_per_pass", False):
            extra["iteration"] = self.draw_pass
        # check_finite False, like the C++ layer: NaN flows into the loss instead of stopping training.
        return spec.call(spec.core_fn, self.options, inputs, uniforms=self.draws, loss_weight=loss_weight,
                         backward=backward, check_finite=False, **extra)

    def forward(self, bottom, top):
        if self.uniforms is not None:
            self.draws = self.uniforms.next(bottom[0].data.shape[0])  # kept for the backward pass
        self.draw_pass = self.passes  # kept for the backward pass
        self.passes += 1
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
        if not any(propagate_down[:features]) and not self.spec.learned_blobs:
            return
        # The core again, with the top's diff as loss weight: the same decisions (same inputs and pass), exact
        # scaling.
        result = self._evaluate(bottom, float(top[0].diff), backward=True)
        for index, grad in enumerate(self.spec.gradients(result)):
            if propagate_down[index]:
                bottom[index].diff[...] = grad.reshape(bottom[index].diff.shape)
        if len(propagate_down) > features and propagate_down[features]:
            bottom[features].diff[...] = 0  # the labels have no gradient
        for index, blob in enumerate(self.spec.learned_blobs):  # the solver's diff accumulates
            self.blobs[index].diff[...] += getattr(result, blob.grad_field).reshape(self.blobs[index].diff.shape)


# The layers, one line each (the class names prototxts give in python_param { layer: ... }); each class's
# docstring is its spec's layer_doc.
class MiningContrastiveLossLayer(LossLayer): spec = LOSSES["MiningContrastiveLoss"]  # noqa: E701
class HardNetLossLayer(LossLayer): spec = LOSSES["HardNetLoss"]  # noqa: E701
class TripletLossLayer(LossLayer): spec = LOSSES["TripletLoss"]  # noqa: E701
class MarginLossLayer(LossLayer): spec = LOSSES["MarginLoss"]  # noqa: E701
