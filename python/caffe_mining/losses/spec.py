"""What the generic code needs to know about one loss: its :class:`LossSpec`.

Each loss module (:mod:`caffe_mining.losses.contrastive`, :mod:`caffe_mining.losses.hardnet`) states its loss once:
its options, result, functional form and a ``SPEC``. The pycaffe layers (:mod:`caffe_mining.layers`), the gradient
check (:mod:`caffe_mining.gradcheck`) and the tests read the spec instead of branching on the layer type.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["LearnedBlob", "LossSpec"]


@dataclasses.dataclass(frozen=True)
class LearnedBlob:
    """A learnable parameter of the layer (a blob the solver updates), passed to the loss functions by keyword.

    The pycaffe layer creates it at set-up (``count(options)`` values, each ``fill(options)``), refuses a loaded
    blob of another size (saying ``count_text``), passes a copy of its data as ``name`` and adds the result's
    ``grad_field`` to its diff at every backward pass.
    """

    name: str  # keyword argument of the loss functions (core and reference)
    count: Callable[[Any], int]  # options -> number of values
    count_text: str  # how count is computed, for the message (e.g. "max(1, num_classes)")
    fill: Callable[[Any], float]  # options -> the initial value of every entry
    grad_field: str  # result field holding its gradient


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """One loss, seen uniformly.

    Bottoms are ``differentiable`` (N x D features, each with a gradient in ``grad_fields`` of the result) then
    ``label_bottom`` (N values, no gradient; optional unless ``label_required``). Every loss function (core,
    reference) is called as ``fn(*features, labels, **options.loss_kwargs(), loss_weight=..., backward=...)``.
    """

    type_name: str  # the Caffe layer type (and the key of caffe_mining.losses.LOSSES)
    # The options: a frozen dataclass whose fields, names and defaults are the proto message's (checked by
    # tests/test_option_defaults.py), validating in __post_init__, with class attributes proto_param (the
    # LayerParameter field) and choices (enum field -> names in proto order), and draws_uniforms, loss_kwargs(),
    # proto_text(), from_proto(layer_parameter), batch_warning(n) (what the layer says once, or None).
    options_class: type
    python_layer: str  # class name in caffe_mining.layers
    differentiable: Tuple[str, ...]  # bottoms with a gradient, in bottom order
    label_bottom: str  # the per-row bottom after them (no gradient)
    label_required: bool  # False: the label bottom may be left out
    grad_fields: Tuple[str, ...]  # result fields holding the gradients of `differentiable`
    decision_fields: Tuple[Tuple[str, Any], ...]  # (result field, dtype): the mining decisions, compared exactly
    core_fn: Callable  # the C++ core through the bindings (caffe_mining.functional's function)
    reference: str  # "module:function" of the NumPy reference, imported when first used (it imports this module)
    draw_inputs: Callable[..., Dict[str, np.ndarray]]  # (options, n, dim, rng, has_labels) -> float64 inputs
    decisions_top: Optional[str] = None  # name of the optional second top: per row the decision_fields
    min_n: int = 0  # the layer refuses fewer rows
    # (options, inputs) -> per row, the relative slack between the layer's gradient and the exact derivative of its
    # loss that is there by design (None: none).
    gradient_slack: Optional[Callable[[Any, Dict[str, np.ndarray]], np.ndarray]] = None
    # (options, result) -> the decisions top as one int64 table, for a loss whose decisions are not one value per
    # row (TripletLoss: a row per mined triplet); None: one column per decision field, one row per batch row.
    decisions_table: Optional[Callable[[Any, Any], np.ndarray]] = None
    # The layer's learnable blobs (e.g. a learnt margin), in blob order; the loss functions take each by keyword and
    # use its options' initial value where it is not given.
    learned_blobs: Tuple[LearnedBlob, ...] = ()
    layer_doc: str = ""  # the pycaffe layer's docstring: its bottoms, tops and blobs in a few words
    # The gradient check's CLI arguments after --layer for scripts/main.sh's quick check of the C++ layer through
    # pycaffe (python -m caffe_mining.gradcheck --target caffe --layer <type_name> ...).
    check_args: Tuple[str, ...] = ("--n", "8", "--dim", "4")
    # The gradient check's cases (tests/test_gradcheck.py): (options, whether the label bottom is given), chosen to
    # reach every piece and mining rule of the loss.
    gradcheck_cases: Tuple[Tuple[Any, bool], ...] = ()
    # The options fields a case's test id names (None: every field but eps and those left None).
    gradcheck_id_fields: Optional[Tuple[str, ...]] = None

    @property
    def reference_fn(self) -> Callable:
        module, _, function = self.reference.partition(":")
        return getattr(importlib.import_module(module), function)

    @property
    def bottoms(self) -> Tuple[str, ...]:
        return (*self.differentiable, self.label_bottom)

    def call(self, fn: Callable, options: Any, inputs: Dict[str, Any], uniforms: Optional[np.ndarray] = None,
             **kwargs: Any):
        """``fn`` (core, reference or a stand-in with their signature) on ``inputs`` (by bottom name; the label
        may be missing) with ``options``; ``kwargs``: loss_weight, backward, check_finite."""
        arguments = [inputs[name] for name in self.differentiable] + [inputs.get(self.label_bottom)]
        extra = dict(uniforms=uniforms) if options.draws_uniforms else {}
        return fn(*arguments, **options.loss_kwargs(), **extra, **kwargs)

    def decisions(self, result, options: Any = None) -> Tuple[np.ndarray, ...]:
        """The mining decisions of a result, as the arrays compared exactly."""
        if self.decisions_table is not None:
            return (self.decisions_table(options, result),)
        return tuple(np.asarray(getattr(result, field), dtype) for field, dtype in self.decision_fields)

    def decisions_top_data(self, options: Any, result) -> np.ndarray:
        """The decisions top of a layer (2-D) for a result."""
        if self.decisions_table is not None:
            return self.decisions_table(options, result)
        return np.stack([np.asarray(getattr(result, field)) for field, _ in self.decision_fields], axis=1)

    def decisions_from_top(self, data: np.ndarray) -> Tuple[np.ndarray, ...]:
        """What decisions() gives, read back from a layer's decisions top."""
        if self.decisions_table is not None:
            return (np.asarray(data).astype(np.int64).reshape(np.shape(data)[0], -1),)
        return tuple(data[:, k] != 0 if dtype is bool else data[:, k].astype(dtype)
                     for k, (_, dtype) in enumerate(self.decision_fields))

    def gradients(self, result) -> Tuple[Any, ...]:
        return tuple(getattr(result, field) for field in self.grad_fields)
