"""MarginLoss in Python: its options (margin_loss_param), result, functional form and spec.

The math is the core header's (caffe_layers/include/caffe_mining/margin.hpp) and
:func:`caffe_mining.reference.margin_loss`'s; the function here runs the C++ core. beta, the layer's learnable
blob, is an argument here (``beta=None``: every value ``beta_init``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining import _core, device
from caffe_mining.losses.fields import check_choice, check_int, check_number, proto_decimal, raise_if
from caffe_mining.losses.spec import LearnedBlob, LossSpec

__all__ = ["SAMPLERS", "SPEC", "MarginOptions", "MarginResult", "margin_loss"]

#: sampler values, in the order of MarginLossParameter.Sampler (the index is the proto enum value).
SAMPLERS = ("DISTANCE_WEIGHTED", "UNIFORM")


@dataclasses.dataclass(frozen=True)
class MarginOptions:
    """margin_loss_param of MarginLoss. The defaults are caffe.proto's (tests/test_option_defaults.py checks them
    against it and the bindings)."""

    margin: float = 0.2
    beta_init: float = 1.2
    nu: float = 0.0
    num_classes: int = 0
    negatives_per_positive: int = 1
    sampler: str = "DISTANCE_WEIGHTED"
    cutoff: float = 0.5
    nonzero_loss_cutoff: float = 1.4
    eps: float = 1e-8
    seed: int = 0

    #: The LayerParameter field of these options (its message: MarginLossParameter).
    proto_param: ClassVar[str] = "margin_loss_param"
    #: The enum fields: their names in the order of the proto's values.
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = {"sampler": SAMPLERS}
    #: The draws are the core's own (Philox keyed by seed and iteration), not caller-given uniforms ...
    draws_uniforms: ClassVar[bool] = False
    #: ... and the layers key them by their forward-pass count: a new pass, new triplets.
    draws_per_pass: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for key in ("margin", "beta_init", "nu", "cutoff", "nonzero_loss_cutoff", "eps"):
            check_number(key, getattr(self, key))
        for key in ("num_classes", "negatives_per_positive", "seed"):
            check_int(key, getattr(self, key))
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2^64). Got: {self.seed}")
        object.__setattr__(self, "sampler", check_choice("sampler", self.sampler, SAMPLERS))
        raise_if(_core.margin_options_problem(**self.loss_kwargs()))

    def loss_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the loss functions (core and reference)."""
        return dataclasses.asdict(self)

    def proto_text(self) -> str:
        """The ``margin_loss_param { ... }`` block of a prototxt."""
        fields = [f"margin: {self.margin!r}", f"beta_init: {self.beta_init!r}", f"nu: {self.nu!r}",
                  f"num_classes: {self.num_classes}", f"negatives_per_positive: {self.negatives_per_positive}",
                  f"sampler: {self.sampler}", f"cutoff: {self.cutoff!r}",
                  f"nonzero_loss_cutoff: {self.nonzero_loss_cutoff!r}", f"eps: {self.eps!r}", f"seed: {self.seed}"]
        return f"{self.proto_param} {{ " + " ".join(fields) + " }"

    @classmethod
    def from_proto(cls, layer) -> "MarginOptions":
        """The options of a caffe_pb2.LayerParameter of type MarginLoss."""
        p = getattr(layer, cls.proto_param)
        return cls(proto_decimal(p.margin), proto_decimal(p.beta_init), proto_decimal(p.nu), int(p.num_classes),
                   int(p.negatives_per_positive), SAMPLERS[p.sampler], proto_decimal(p.cutoff),
                   proto_decimal(p.nonzero_loss_cutoff), proto_decimal(p.eps), int(p.seed))

    def batch_warning(self, n: int) -> Optional[str]:
        return None


class MarginResult(NamedTuple):
    """One MarginLoss evaluation.

    loss: the scalar loss E (float).
    grad_embedding: gradient of ``loss_weight * E`` w.r.t. the embedding, shaped like it (None without backward).
    grad_beta: (max(1, num_classes),) gradient of ``loss_weight * E`` w.r.t. beta (None without backward).
    triplets: (T, 3) int64, the sampled (anchor, positive, negative) rows, in order of (anchor, positive, draw).
    pos_dist, neg_dist: (T,) d_ap and d_an of each triplet.
    hinge_count: C, the number of non-zero hinge terms (the loss's divisor; 0 gives E = 0).
    pieces: reference only (None from the bindings): the triplets and each hinge's state; a finite-difference step
        that changes it crossed a kink or a draw.
    """

    loss: float
    grad_embedding: Optional[np.ndarray]
    grad_beta: Optional[np.ndarray]
    triplets: np.ndarray
    pos_dist: np.ndarray
    neg_dist: np.ndarray
    hinge_count: int
    pieces: Optional[np.ndarray] = None


_DEFAULT = MarginOptions


def margin_loss(embedding: np.ndarray, labels: np.ndarray, beta: Optional[np.ndarray] = None,
                margin: float = _DEFAULT.margin, beta_init: float = _DEFAULT.beta_init, nu: float = _DEFAULT.nu,
                num_classes: int = _DEFAULT.num_classes,
                negatives_per_positive: int = _DEFAULT.negatives_per_positive, sampler: str = _DEFAULT.sampler,
                cutoff: float = _DEFAULT.cutoff, nonzero_loss_cutoff: float = _DEFAULT.nonzero_loss_cutoff,
                eps: float = _DEFAULT.eps, seed: int = _DEFAULT.seed, iteration: int = 0, loss_weight: float = 1.0,
                backward: bool = True, check_finite: bool = True) -> MarginResult:
    """MarginLoss on the core; see :func:`caffe_mining.reference.margin_loss` for the math.

    float32 inputs run the core in float32, float64 in float64; a device embedding runs the CUDA core (labels and
    beta may be host or device values) and gives device arrays back (:mod:`caffe_mining.device`).

    Example:
        >>> x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
        >>> r = margin_loss(x, [0, 0, 1, 1], sampler="UNIFORM")
        >>> r.triplets.shape, r.hinge_count
        ((2, 3), 4)
    """
    kwargs = dict(margin=margin, beta_init=beta_init, nu=nu, num_classes=num_classes,
                  negatives_per_positive=negatives_per_positive, sampler=sampler, cutoff=cutoff,
                  nonzero_loss_cutoff=nonzero_loss_cutoff, eps=eps, seed=seed, iteration=iteration,
                  loss_weight=loss_weight, backward=backward, check_finite=check_finite)
    if device.is_device_array(embedding):
        embedding = device.contiguous(embedding)
        wrap = device.result_wrapper(embedding)
        loss, *arrays, hinge_count = device.cuda_core().margin_loss(embedding, labels, beta, **kwargs)
        return MarginResult(loss, *map(wrap, arrays), hinge_count)
    return MarginResult(*_core.margin_loss(embedding, labels, beta, **kwargs))


def draw_inputs(options: MarginOptions, n: int, dim: int, rng: np.random.Generator,
                has_labels: bool = True) -> Dict[str, np.ndarray]:
    """Random float64 inputs where every piece occurs: unit rows in P x 2 classes (P = n // 2, at least 2
    classes), each class spread around its own direction, so some hinges are open and some closed."""
    classes = max(2, n // 2)
    label = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    embedding = centres[label] + 0.9 * rng.normal(size=(n, dim))
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    if options.num_classes > 0:
        label = label % options.num_classes
    return {"embedding": embedding, "label": label.astype(np.float64)}


def decisions_table(options: MarginOptions, result) -> np.ndarray:
    """The triplets top: this pass's sampled (anchor, positive, negative) rows, T x 3 (the C++ layer's second top)."""
    return np.asarray(result.triplets, dtype=np.int64).reshape(-1, 3)


#: The gradient check's cases (tests/test_gradcheck.py): (options, label given).
GRADCHECK_CASES = tuple((options, True) for options in (
    MarginOptions(), MarginOptions(sampler="UNIFORM", nu=0.1), MarginOptions(negatives_per_positive=3),
    MarginOptions(num_classes=3, nonzero_loss_cutoff=0.0, seed=5)))


#: The pycaffe layer's docstring (caffe_mining.layers).
LAYER_DOC = """MarginLoss: bottoms embedding (N x D, L2-normalised rows) and label (N integer class ids); tops the loss
and, optional, this pass's triplets (T x 3 rows anchor, positive, negative). beta is the layer's blob
(``self.blobs[0]``: one value, or num_classes), filled with beta_init at set-up and learnt by the solver (its
diff accumulates); the draws are keyed by seed and this layer's forward-pass count, as in the C++ layer."""

SPEC = LossSpec(
    type_name="MarginLoss", options_class=MarginOptions, python_layer="MarginLossLayer",
    differentiable=("embedding",), label_bottom="label", label_required=True,
    grad_fields=("grad_embedding",), decision_fields=(("triplets", np.int64),),
    core_fn=margin_loss, reference="caffe_mining.reference:margin_loss", draw_inputs=draw_inputs,
    decisions_top="triplets", decisions_table=decisions_table, min_n=2,
    # beta: one value, or one per class; the solver learns it (its diff accumulates over the backward passes).
    learned_blobs=(LearnedBlob("beta", count=lambda options: max(1, options.num_classes),
                               count_text="max(1, num_classes)", fill=lambda options: options.beta_init,
                               grad_field="grad_beta"),),
    gradcheck_cases=GRADCHECK_CASES, layer_doc=LAYER_DOC)
