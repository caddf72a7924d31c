"""MiningContrastiveLoss in Python: its options (contrastive_loss_param), result, functional form and spec.

The math is the layer header's (caffe_layers/include/caffe/layers/mining_contrastive_loss_layer.hpp) and
:func:`caffe_mining.reference.mining_contrastive_loss`'s; the function here runs the C++ core.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining import _core, device
from caffe_mining.losses.fields import check_bool, check_int, check_number, proto_decimal, raise_if
from caffe_mining.losses.spec import LossSpec

__all__ = ["SPEC", "ContrastiveOptions", "ContrastiveResult", "mining_contrastive_loss"]

@dataclasses.dataclass(frozen=True)
class ContrastiveOptions:
    """contrastive_loss_param of MiningContrastiveLoss: Caffe's margin and legacy_version, our mining_ratio.

    The defaults are caffe.proto's (tests/test_option_defaults.py checks them against it and the bindings).
    """

    margin: float = 1.0
    legacy_version: bool = False
    mining_ratio: int = 1

    #: The LayerParameter field of these options (its message: ContrastiveLossParameter).
    proto_param: ClassVar[str] = "contrastive_loss_param"
    #: The enum fields (none).
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        check_number("margin", self.margin)
        check_bool("legacy_version", self.legacy_version)
        check_int("mining_ratio", self.mining_ratio)
        raise_if(_core.contrastive_options_problem(margin=self.margin, mining_ratio=self.mining_ratio))

    draws_uniforms: ClassVar[bool] = False  # no random choice

    def loss_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of the loss functions (core and reference)."""
        return dataclasses.asdict(self)

    def proto_text(self) -> str:
        """The ``contrastive_loss_param { ... }`` block of a prototxt."""
        return (f"{self.proto_param} {{ margin: {self.margin!r} "
                f"legacy_version: {str(self.legacy_version).lower()} mining_ratio: {self.mining_ratio} }}")

    @classmethod
    def from_proto(cls, layer) -> "ContrastiveOptions":
        """The options of a caffe_pb2.LayerParameter of type MiningContrastiveLoss."""
        p = getattr(layer, cls.proto_param)
        return cls(proto_decimal(p.margin), bool(p.legacy_version), int(p.mining_ratio))

    def batch_warning(self, n: int) -> Optional[str]:
        """What the layer says once when a batch of n pairs keeps no pair."""
        if n // self.mining_ratio == 0:
            return f"mining_ratio {self.mining_ratio} > N = {n}: no pair is picked, the loss and gradients are 0"
        return None


class ContrastiveResult(NamedTuple):
    """One MiningContrastiveLoss evaluation.

    loss: the scalar loss E (float).
    grad_feat, grad_feat_p: gradients of ``loss_weight * E`` w.r.t. feat and feat_p, shaped like the inputs
        (None when the backward pass was not asked for).
    picked: (N,) bool, the K mined pairs.
    cost: (N,) the per-pair costs before mining.
    pieces: (N,) int8 reference only (None from the bindings): which smooth piece each pair is on,
        ``2 * picked + hinge_open``; a finite-difference step that changes it crossed a kink or a decision.
    """

    loss: float
    grad_feat: Optional[np.ndarray]
    grad_feat_p: Optional[np.ndarray]
    picked: np.ndarray
    cost: np.ndarray
    pieces: Optional[np.ndarray] = None


_DEFAULT = ContrastiveOptions


def mining_contrastive_loss(feat: np.ndarray, feat_p: np.ndarray, sim: np.ndarray, margin: float = _DEFAULT.margin,
                            legacy_version: bool = _DEFAULT.legacy_version, mining_ratio: int = _DEFAULT.mining_ratio,
                            loss_weight: float = 1.0, backward: bool = True,
                            check_finite: bool = True) -> ContrastiveResult:
    """MiningContrastiveLoss on the core; see :func:`caffe_mining.reference.mining_contrastive_loss` for the math.

    float32 inputs run the core in float32, float64 in float64; device arrays run the CUDA core and give device
    arrays back (:mod:`caffe_mining.device`).

    Example:
        >>> r = mining_contrastive_loss(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), [1, 0])
        >>> r.loss, r.grad_feat.dtype, r.picked.tolist()
        (0.75, dtype('float32'), [True, True])
    """
    kwargs = dict(margin=margin, legacy_version=legacy_version, mining_ratio=mining_ratio, loss_weight=loss_weight,
                  backward=backward, check_finite=check_finite)
    if device.is_device_array(feat):
        feat, feat_p = device.contiguous(feat), device.contiguous(feat_p)
        wrap = device.result_wrapper(feat)
        loss, *arrays = device.cuda_core().mining_contrastive_loss(feat, feat_p, device.row_values(sim, feat),
                                                                   **kwargs)
        return ContrastiveResult(loss, *map(wrap, arrays))
    return ContrastiveResult(*_core.mining_contrastive_loss(feat, feat_p, sim, **kwargs))


def draw_inputs(options: ContrastiveOptions, n: int, dim: int, rng: np.random.Generator,
                has_labels: bool = True) -> Dict[str, np.ndarray]:
    """Random float64 inputs where every piece of the loss occurs: distances around the margin (dissimilar hinges
    open and closed), both kinds of pair."""
    scale = 0.8 * max(options.margin, 1e-3) / np.sqrt(2 * dim)
    return {"feat": rng.normal(size=(n, dim)) * scale, "feat_p": rng.normal(size=(n, dim)) * scale,
            "sim": rng.permutation(np.arange(n) % 2).astype(np.float64)}


def gradient_slack(options: ContrastiveOptions, inputs: Dict[str, np.ndarray]) -> np.ndarray:
    """Per pair, the relative difference between the layer's gradient and the exact derivative of its loss that is
    there by design: the layer divides by (d + 1e-4) instead of d (Caffe's guard) for open dissimilar pairs, so
    |exact - layer| = |layer| * 1e-4 / d there; zero elsewhere and with legacy_version."""
    from caffe_mining.reference import CAFFE_DIST_GUARD  # (here: the reference imports this module)

    n = inputs["feat"].shape[0]
    if options.legacy_version:
        return np.zeros(n)
    diff = (np.asarray(inputs["feat"], np.float64) - np.asarray(inputs["feat_p"], np.float64)).reshape(n, -1)
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    guarded = (np.asarray(inputs["sim"]).reshape(-1) == 0) & (dist < options.margin)
    return np.where(guarded, CAFFE_DIST_GUARD / np.maximum(dist, 1e-300), 0.0)


#: The gradient check's cases (tests/test_gradcheck.py): (options, label given).
GRADCHECK_CASES = tuple((ContrastiveOptions(margin, legacy, ratio), True)
                        for margin, legacy, ratio in [(1.0, False, 1), (1.0, False, 2), (0.7, False, 3),
                                                      (1.0, True, 1), (1.0, True, 2), (1.5, True, 4)])


#: The pycaffe layer's docstring (caffe_mining.layers).
LAYER_DOC = """MiningContrastiveLoss: bottoms feat, feat_p (N x D), sim (N values, 1 similar / 0 dissimilar); one top."""

SPEC = LossSpec(
    type_name="MiningContrastiveLoss", options_class=ContrastiveOptions, python_layer="MiningContrastiveLossLayer",
    differentiable=("feat", "feat_p"), label_bottom="sim", label_required=True,
    grad_fields=("grad_feat", "grad_feat_p"), decision_fields=(("picked", bool),),
    core_fn=mining_contrastive_loss, reference="caffe_mining.reference:mining_contrastive_loss",
    draw_inputs=draw_inputs, gradient_slack=gradient_slack,
    check_args=("--n", "8", "--dim", "4", "--param", "mining_ratio=2"), gradcheck_cases=GRADCHECK_CASES, layer_doc=LAYER_DOC)
