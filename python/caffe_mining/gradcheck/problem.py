"""What is checked: a loss (its spec), its options, the loss weight, the label bottom, RANDOM's draws."""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from caffe_mining.losses import LOSSES, LossSpec
from caffe_mining.sampling import LayerUniforms

__all__ = ["SPECS", "Problem", "draw_inputs", "make_problem"]

#: Layer type -> spec: the losses' registry itself (caffe_mining.losses.LOSSES).
SPECS = LOSSES


@dataclasses.dataclass
class Problem:
    """What is checked: a loss with its options, the loss weight and whether the label bottom is given.

    For options that draw uniforms (HardNet RANDOM), ``uniforms`` are the draws of a freshly set-up layer with
    ``options.seed``.
    """

    spec: LossSpec
    options: object
    loss_weight: float = 1.0
    has_labels: bool = True  # whether the label bottom exists (always, for a spec whose label is required)
    uniforms: Optional[np.ndarray] = None

    def call(self, fn: Callable, inputs: Dict[str, np.ndarray], backward: bool = True):
        """Calls a loss function with the reference's signature (reference or core) on ``inputs``."""
        return self.spec.call(fn, self.options, inputs, uniforms=self.uniforms, loss_weight=self.loss_weight,
                              backward=backward)

    def reference(self, inputs: Dict[str, np.ndarray]):
        return self.call(self.spec.reference_fn, {k: np.asarray(v, np.float64) for k, v in inputs.items()})

    def pieces(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """The reference's description of the smooth piece the loss is on (equal pieces: no kink between)."""
        return self.reference(inputs).pieces

    def decisions(self, result) -> Tuple[np.ndarray, ...]:
        return self.spec.decisions(result, self.options)

    def guard_slack(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """Per row, the relative difference between the layer's gradient and the exact derivative of its loss that
        is there by design (the spec's gradient_slack; zero where it has none)."""
        if self.spec.gradient_slack is None:
            return np.zeros(next(iter(inputs.values())).shape[0])
        return self.spec.gradient_slack(self.options, inputs)


def make_problem(layer: str, options=None, loss_weight: float = 1.0, has_labels: bool = True,
                 n: int = 0, seed: int = 0) -> Problem:
    """A Problem for ``layer`` (a key of SPECS); options that draw uniforms (HardNet RANDOM) without a seed get
    ``seed`` as their seed so the check is reproducible."""
    if layer not in SPECS:
        raise ValueError(f"layer must be one of {', '.join(SPECS)}. Got: {layer!r}")
    spec = SPECS[layer]
    options = options if options is not None else spec.options_class()
    problem = Problem(spec, options, loss_weight, has_labels or spec.label_required)
    if options.draws_uniforms:
        if options.seed is None:
            problem.options = dataclasses.replace(options, seed=seed)
        problem.uniforms = LayerUniforms(problem.options.seed).next(n) if n else None
    return problem


def draw_inputs(problem: Problem, n: int, dim: int, rng: np.random.Generator, dtype: str) -> Dict[str, np.ndarray]:
    """Random inputs in the regime where every piece of the loss occurs (the spec's draw_inputs), rounded to
    ``dtype`` and held as float64."""
    inputs = problem.spec.draw_inputs(problem.options, n, dim, rng, problem.has_labels)
    return {k: v.astype(dtype).astype(np.float64) for k, v in inputs.items()}
