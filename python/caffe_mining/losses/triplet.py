"""TripletLoss in Python: its options (triplet_loss_param), result, functional form and spec.

The math is the core header's (caffe_layers/include/caffe_mining/triplet.hpp) and
:func:`caffe_mining.reference.triplet_loss`'s; the function here runs the C++ core.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining import _core, device
from caffe_mining.losses.fields import check_bool, check_choice, check_number, proto_decimal, raise_if
from caffe_mining.losses.spec import LossSpec

__all__ = ["MININGS", "SPEC", "TripletOptions", "TripletResult", "decisions_table", "triplet_loss"]

#: mining values, in the order of TripletLossParameter.Mining (the index is the proto enum value).
MININGS = ("BATCH_HARD", "BATCH_ALL", "SEMI_HARD")


@dataclasses.dataclass(frozen=True)
class TripletOptions:
    """triplet_loss_param of TripletLoss.

    The defaults are caffe.proto's (tests/test_option_defaults.py checks them against it and the bindings).
    """

    margin: float = 0.2
    soft_margin: bool = False
    squared: bool = False
    mining: str = "BATCH_HARD"
    eps: float = 1e-12

    #: The LayerParameter field of these options (its message: TripletLossParameter).
    proto_param: ClassVar[str] = "triplet_loss_param"
    #: The enum fields: their names in the order of the proto's values.
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = {"mining": MININGS}
    draws_uniforms: ClassVar[bool] = False  # no random choice

    def __post_init__(self) -> None:
        for key in ("margin", "eps"):
            check_number(key, getattr(self, key))
        for key in ("soft_margin", "squared"):
            check_bool(key, getattr(self, key))
        object.__setattr__(self, "mining", check_choice("mining", self.mining, MININGS))
        raise_if(_core.triplet_options_problem(**self.loss_kwargs()))

    def loss_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the loss functions (core and reference)."""
        return dataclasses.asdict(self)

    def proto_text(self) -> str:
        """The ``triplet_loss_param { ... }`` block of a prototxt."""
        return (f"{self.proto_param} {{ margin: {self.margin!r} soft_margin: {str(self.soft_margin).lower()} "
                f"squared: {str(self.squared).lower()} mining: {self.mining} eps: {self.eps!r} }}")

    @classmethod
    def from_proto(cls, layer) -> "TripletOptions":
        """The options of a caffe_pb2.LayerParameter of type TripletLoss."""
        p = getattr(layer, cls.proto_param)
        return cls(proto_decimal(p.margin), bool(p.soft_margin), bool(p.squared), MININGS[p.mining],
                   proto_decimal(p.eps))

    def batch_warning(self, n: int) -> Optional[str]:
        return None


class TripletResult(NamedTuple):
    """One TripletLoss evaluation.

    loss: the scalar loss E (float).
    grad_embedding: gradient of ``loss_weight * E`` w.r.t. the embedding, shaped like it (None without backward).
    triplets: (T, 3) int64 rows (anchor, positive, negative): BATCH_HARD one per anchor (positive and negative -1
        when the anchor gives no term), SEMI_HARD one per ordered positive pair (a, p) in increasing (a, p)
        (negative -1 when a has no negative), BATCH_ALL none.
    terms: the mean's denominator: anchors (BATCH_HARD) or positive pairs (SEMI_HARD) that give a term, BATCH_ALL
        the terms with loss > 0; -1 for non-finite input.
    pieces: reference only (None from the bindings): a code of every smooth piece the loss is on (the mined
        indices and each counted term's hinge state); a finite-difference step that changes it crossed a kink or a
        decision.
    """

    loss: float
    grad_embedding: Optional[np.ndarray]
    triplets: np.ndarray
    terms: int
    pieces: Optional[np.ndarray] = None


_DEFAULT = TripletOptions


def triplet_loss(embedding: np.ndarray, labels: np.ndarray, margin: float = _DEFAULT.margin,
                 soft_margin: bool = _DEFAULT.soft_margin, squared: bool = _DEFAULT.squared,
                 mining: str = _DEFAULT.mining, eps: float = _DEFAULT.eps, loss_weight: float = 1.0,
                 backward: bool = True, check_finite: bool = True) -> TripletResult:
    """TripletLoss on the core; see :func:`caffe_mining.reference.triplet_loss` for the math.

    float32 inputs run the core in float32, float64 in float64; device arrays run the CUDA core and give device
    arrays back (:mod:`caffe_mining.device`).

    Example:
        >>> x = np.array([[0.0, 0.0], [0.0, 0.5], [1.0, 0.0]]); y = np.array([0, 0, 1])
        >>> r = triplet_loss(x, y)
        >>> round(r.loss, 6), r.triplets.tolist()
        (0.0, [[0, 1, 2], [1, 0, 2], [2, -1, -1]])
    """
    kwargs = dict(margin=margin, soft_margin=soft_margin, squared=squared, mining=mining, eps=eps,
                  loss_weight=loss_weight, backward=backward, check_finite=check_finite)
    if device.is_device_array(embedding):
        embedding = device.contiguous(embedding)
        wrap = device.result_wrapper(embedding)
        loss, grad, triplets, terms = device.cuda_core().triplet_loss(embedding, labels, **kwargs)
        return TripletResult(loss, wrap(grad), wrap(triplets), terms)
    return TripletResult(*_core.triplet_loss(embedding, labels, **kwargs))


def decisions_table(options: TripletOptions, result) -> np.ndarray:
    """The layer's second top: the mined triplets (BATCH_HARD, SEMI_HARD) or [[terms]] (BATCH_ALL), int64."""
    if options.mining == "BATCH_ALL":
        return np.array([[result.terms]], dtype=np.int64)
    return np.asarray(result.triplets, dtype=np.int64).reshape(-1, 3)


def draw_inputs(options: TripletOptions, n: int, dim: int, rng: np.random.Generator,
                has_labels: bool = True) -> Dict[str, np.ndarray]:
    """Random float64 inputs where every piece of the loss occurs: about three rows per class, class centres
    spread so that distances within and between classes overlap around the margin (hinges open and closed, and
    semi-hard negatives both beyond and inside the positive's distance)."""
    classes = max(2, (n + 2) // 3)
    label = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)) * 0.35 / np.sqrt(dim)
    embedding = centres[label] + rng.normal(size=(n, dim)) * 0.3 / np.sqrt(dim)
    return {"embedding": embedding, "label": label.astype(np.float64)}


#: The gradient check's cases (tests/test_gradcheck.py): (options, label given).
GRADCHECK_CASES = tuple((TripletOptions(mining=mining, soft_margin=soft, squared=squared), True)
                        for mining, soft, squared in itertools.product(MININGS, [False, True], [False, True]))


#: The pycaffe layer's docstring (caffe_mining.layers).
LAYER_DOC = """TripletLoss: bottoms embedding (N x D), label (N integer class ids); tops the loss and, optional, the mined
triplets (T x 3 rows anchor, positive, negative: BATCH_HARD per anchor, SEMI_HARD per positive pair, -1 where
none) or, for BATCH_ALL, 1 x 1 the number of terms with loss > 0."""

SPEC = LossSpec(
    type_name="TripletLoss", options_class=TripletOptions, python_layer="TripletLossLayer",
    differentiable=("embedding",), label_bottom="label", label_required=True, grad_fields=("grad_embedding",),
    decision_fields=(("triplets", np.int64),), core_fn=triplet_loss, reference="caffe_mining.reference:triplet_loss",
    draw_inputs=draw_inputs, decisions_top="triplets", min_n=1, decisions_table=decisions_table,
    check_args=("--n", "8", "--dim", "4", "--param", "mining=SEMI_HARD"), gradcheck_cases=GRADCHECK_CASES, layer_doc=LAYER_DOC)
