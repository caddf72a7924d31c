"""A third loss written against the loss kit (caffe_mining.losses), used by tests/test_loss_kit.py to show that
a loss's own module is all the generic code needs: no change to layers.py, gradcheck or options parsing.

PairHingeLoss: N pairs (a_i, b_i) with labels y_i in {0, 1}, d_i = |a_i - b_i|^2, cost d_i for y_i = 1 and
max(m - d_i, 0) for y_i = 0, E = mean cost. Its decision is per pair: whether the hinge is open. The "core" here
is NumPy in the inputs' dtype; the reference is a float64 loop, written apart.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining.losses.fields import check_number, proto_decimal
from caffe_mining.losses.spec import LossSpec


@dataclasses.dataclass(frozen=True)
class PairHingeOptions:
    margin: float = 1.0

    proto_param: ClassVar[str] = "pair_hinge_loss_param"
    choices: ClassVar[Dict[str, Tuple[str, ...]]] = {}
    draws_uniforms: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_number("margin", self.margin)
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be >= 0 and finite. Got: {self.margin}")

    def loss_kwargs(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def proto_text(self) -> str:
        return f"{self.proto_param} {{ margin: {self.margin!r} }}"

    @classmethod
    def from_proto(cls, layer) -> "PairHingeOptions":
        return cls(proto_decimal(getattr(layer, cls.proto_param).margin))

    def batch_warning(self, n: int) -> Optional[str]:
        return None


class PairHingeResult(NamedTuple):
    loss: float
    grad_a: Optional[np.ndarray]
    grad_b: Optional[np.ndarray]
    hinge_open: np.ndarray
    pieces: Optional[np.ndarray] = None


def pair_hinge_loss(a, b, label, margin: float = PairHingeOptions.margin, loss_weight: float = 1.0,
                    backward: bool = True, check_finite: bool = True) -> PairHingeResult:
    a, b = np.asarray(a), np.asarray(b)
    dtype = a.dtype.type if a.dtype in (np.float32, np.float64) else np.float64
    diff = (a - b).astype(dtype)
    dist_sq = np.einsum("ij,ij->i", diff, diff)
    similar = np.asarray(label).reshape(-1) == 1
    hinge_open = ~similar & (dist_sq < dtype(margin))
    cost = np.where(similar, dist_sq, np.where(hinge_open, dtype(margin) - dist_sq, dtype(0)))
    loss = float(np.mean(cost, dtype=dtype))
    if not backward:
        return PairHingeResult(loss, None, None, hinge_open)
    slope = np.where(similar, dtype(2), np.where(hinge_open, dtype(-2), dtype(0))).astype(dtype)
    grad = slope[:, None] * diff * dtype(loss_weight / len(diff))
    return PairHingeResult(loss, grad, -grad, hinge_open)


def pair_hinge_reference(a, b, label, margin=1.0, loss_weight=1.0, backward=True) -> PairHingeResult:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = len(a)
    total, grad_a, opened = 0.0, np.zeros_like(a), np.zeros(n, bool)
    for i in range(n):
        d = float(np.sum((a[i] - b[i]) ** 2))
        if label[i] == 1:
            total += d
            grad_a[i] = 2 * (a[i] - b[i]) / n
        elif d < margin:
            opened[i] = True
            total += margin - d
            grad_a[i] = -2 * (a[i] - b[i]) / n
    grad_a *= loss_weight
    return PairHingeResult(total / n, grad_a, -grad_a, opened, opened.astype(np.int8))


def draw_inputs(options: PairHingeOptions, n: int, dim: int, rng: np.random.Generator, has_labels: bool = True):
    scale = np.sqrt(max(options.margin, 1e-3) / (2 * dim))  # squared distances around the margin
    return {"a": rng.normal(size=(n, dim)) * scale, "b": rng.normal(size=(n, dim)) * scale,
            "label": rng.permutation(np.arange(n) % 2).astype(np.float64)}


SPEC = LossSpec(
    type_name="PairHingeLoss", options_class=PairHingeOptions, python_layer="PairHingeLossLayer",
    differentiable=("a", "b"), label_bottom="label", label_required=True, grad_fields=("grad_a", "grad_b"),
    decision_fields=(("hinge_open", bool),), core_fn=pair_hinge_loss, reference="kit_toy_loss:pair_hinge_reference",
    draw_inputs=draw_inputs)
