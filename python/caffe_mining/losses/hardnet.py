"""HardNetLoss in Python: its options (hardnet_loss_param), result, functional form and spec.

The math is the layer header's (caffe_layers/include/caffe/layers/hardnet_loss_layer.hpp) and
:func:`caffe_mining.reference.hardnet_loss`'s; the function here runs the C++ core.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining import _core, device
from caffe_mining.losses.fields import check_bool, check_choice, check_int, check_number, proto_decimal, raise_if
from caffe_mining.losses.spec import LossSpec

__all__ = ["BATCH_REDUCES", "LOSS_TYPES", "SPEC", "HardNetOptions", "HardNetResult", "hardnet_loss"]

#: batch_reduce values, in the order of HardNetLossParameter.BatchReduce (the index is the proto enum value).
BATCH_REDUCES = ("MIN", "AVERAGE", "RANDOM")
#: loss_type values, in the order of HardNetLossParameter.LossType.
LOSS_TYPES = ("TRIPLET_MARGIN", "SOFTMAX", "CONTRASTIVE")


@dataclasses.dataclass(frozen=True)
class HardNetOptions:
    """hardnet_loss_param of HardNetLoss. ``seed`` None: RANDOM draws from an unseeded generator.

    The defaults are caffe.proto's (tests/test_option_defaults.py checks them against it and the bindings).
    """

    margin: float = 1.0
    anchor_swap: bool = False
    batch_reduce: str = "MIN"
    loss_type: str = "TRIPLET_MARGIN"
    eps: float = 1e-6
    duplicate_threshold: float = 0.008
    seed: Optional[int] = None

    #: The LayerParameter field of these options (its message: HardNetLossParameter).
    proto_param: ClassVar[str] = "hardnet_loss_param"
    #: The enum fields: their names in the order of the proto's values.
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = {"batch_reduce": BATCH_REDUCES, "loss_type": LOSS_TYPES}

    def __post_init__(self) -> None:
        for key in ("margin", "eps", "duplicate_threshold"):
            check_number(key, getattr(self, key))
        check_bool("anchor_swap", self.anchor_swap)
        for key, allowed in self.choices.items():
            object.__setattr__(self, key, check_choice(key, getattr(self, key), allowed))
        # The ranges: the core's check, the one the C++ layer and the bindings make (float32 at call time).
        raise_if(_core.hardnet_options_problem(**self.loss_kwargs()))
        if self.seed is not None:
            check_int("seed", self.seed)
            if not 0 <= self.seed < 2**32:
                raise ValueError(f"seed must be in [0, 2^32). Got: {self.seed}")

    @property
    def draws_uniforms(self) -> bool:
        """Whether the loss takes per-row uniforms (RANDOM: caffe_mining.sampling.LayerUniforms(seed))."""
        return self.batch_reduce == "RANDOM"

    def loss_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the loss functions (core and reference); the seed is the layer's."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "seed"}

    def proto_text(self) -> str:
        """The ``hardnet_loss_param { ... }`` block of a prototxt."""
        fields = [f"margin: {self.margin!r}", f"anchor_swap: {str(self.anchor_swap).lower()}",
                  f"batch_reduce: {self.batch_reduce}", f"loss_type: {self.loss_type}", f"eps: {self.eps!r}",
                  f"duplicate_threshold: {self.duplicate_threshold!r}"]
        if self.seed is not None:
            fields.append(f"seed: {self.seed}")
        return f"{self.proto_param} {{ " + " ".join(fields) + " }"

    @classmethod
    def from_proto(cls, layer) -> "HardNetOptions":
        """The options of a caffe_pb2.LayerParameter of type HardNetLoss."""
        p = getattr(layer, cls.proto_param)
        return cls(proto_decimal(p.margin), bool(p.anchor_swap), BATCH_REDUCES[p.batch_reduce],
                   LOSS_TYPES[p.loss_type], proto_decimal(p.eps), proto_decimal(p.duplicate_threshold),
                   int(p.seed) if p.HasField("seed") else None)

    def batch_warning(self, n: int) -> Optional[str]:
        return None


class HardNetResult(NamedTuple):
    """One HardNetLoss evaluation.

    loss: the scalar loss E (float).
    grad_anchor, grad_positive: gradients of ``loss_weight * E`` w.r.t. anchor and positive, shaped like the
        inputs (None when the backward pass was not asked for).
    neg_index: (N,) int64, per row the chosen negative j (MIN, RANDOM) or the hardest one (AVERAGE); -1 when the
        row has no valid negative.
    neg_swapped: (N,) bool, whether that negative's distance is the swapped D_ji.
    neg_count: (N,) int64, the number of valid candidates of each row.
    pos_dist: (N,) D_ii.  neg_dist: (N,) the value of the candidate in neg_index (0 for an empty row).
    pieces: reference only (None from the bindings): an int8 code of every smooth piece the loss is on
        (validity, swap choice and hinge state of each candidate that counts); a finite-difference step that
        changes it crossed a kink or a decision.
    """

    loss: float
    grad_anchor: Optional[np.ndarray]
    grad_positive: Optional[np.ndarray]
    neg_index: np.ndarray
    neg_swapped: np.ndarray
    neg_count: np.ndarray
    pos_dist: np.ndarray
    neg_dist: np.ndarray
    pieces: Optional[np.ndarray] = None


_DEFAULT = HardNetOptions


def hardnet_loss(anchor: np.ndarray, positive: np.ndarray, labels: Optional[np.ndarray] = None,
                 margin: float = _DEFAULT.margin, anchor_swap: bool = _DEFAULT.anchor_swap,
                 batch_reduce: str = _DEFAULT.batch_reduce, loss_type: str = _DEFAULT.loss_type,
                 eps: float = _DEFAULT.eps, duplicate_threshold: float = _DEFAULT.duplicate_threshold,
                 uniforms: Optional[np.ndarray] = None, loss_weight: float = 1.0, backward: bool = True,
                 check_finite: bool = True) -> HardNetResult:
    """HardNetLoss on the core; see :func:`caffe_mining.reference.hardnet_loss` for the math.

    float32 inputs run the core in float32, float64 in float64; device arrays run the CUDA core and give device
    arrays back (:mod:`caffe_mining.device`).

    Example:
        >>> a = np.array([[0.0, 0.0], [1.0, 0.0]]); p = np.array([[0.0, 0.1], [1.0, 0.1]])
        >>> r = hardnet_loss(a, p)
        >>> round(r.loss, 6), r.neg_index.tolist()
        (0.095017, [1, 0])
    """
    kwargs = dict(margin=margin, anchor_swap=anchor_swap, batch_reduce=batch_reduce, loss_type=loss_type, eps=eps,
                  duplicate_threshold=duplicate_threshold, loss_weight=loss_weight, backward=backward,
                  check_finite=check_finite)
    if device.is_device_array(anchor):
        anchor, positive = device.contiguous(anchor), device.contiguous(positive)
        wrap = device.result_wrapper(anchor)
        loss, *arrays = device.cuda_core().hardnet_loss(
            anchor, positive, device.row_values(labels, anchor), uniforms=device.row_values(uniforms, anchor),
            **kwargs)
        return HardNetResult(loss, *map(wrap, arrays))
    return HardNetResult(*_core.hardnet_loss(anchor, positive, labels, uniforms=uniforms, **kwargs))


def draw_inputs(options: HardNetOptions, n: int, dim: int, rng: np.random.Generator,
                has_labels: bool = True) -> Dict[str, np.ndarray]:
    """Random float64 inputs where every piece of the loss occurs: positives near their anchors, negatives about
    one unit away (triplet hinges open and closed), with labels some rows of the same class (masked)."""
    anchor = rng.normal(size=(n, dim)) / np.sqrt(dim)
    inputs = {"anchor": anchor, "positive": anchor + 0.4 * rng.normal(size=(n, dim)) / np.sqrt(dim)}
    if has_labels:
        inputs["label"] = rng.integers(0, max(2, (n + 1) // 2), size=n).astype(np.float64)
    return inputs


#: The gradient check's cases (tests/test_gradcheck.py): (options, label given).
GRADCHECK_CASES = tuple((HardNetOptions(anchor_swap=swap, batch_reduce=br, loss_type=lt), labels)
                        for br, lt, swap in itertools.product(BATCH_REDUCES, LOSS_TYPES, [False, True])
                        for labels in (False, True))


#: The pycaffe layer's docstring (caffe_mining.layers).
LAYER_DOC = """HardNetLoss: bottoms anchor, positive (N x D), optional label (N class ids); tops the loss and, optional,
N x 2 negatives: per row the chosen (MIN, RANDOM) or hardest (AVERAGE) negative j, -1 if none, and 1 if its
distance is the swapped D_ji."""

SPEC = LossSpec(
    type_name="HardNetLoss", options_class=HardNetOptions, python_layer="HardNetLossLayer",
    differentiable=("anchor", "positive"), label_bottom="label", label_required=False,
    grad_fields=("grad_anchor", "grad_positive"), decision_fields=(("neg_index", np.int64), ("neg_swapped", bool)),
    core_fn=hardnet_loss, reference="caffe_mining.reference:hardnet_loss", draw_inputs=draw_inputs,
    decisions_top="negatives", min_n=2,
    check_args=("--n", "6", "--dim", "4", "--param", "anchor_swap=true"), gradcheck_cases=GRADCHECK_CASES,
    gradcheck_id_fields=("batch_reduce", "loss_type", "anchor_swap"), layer_doc=LAYER_DOC)
