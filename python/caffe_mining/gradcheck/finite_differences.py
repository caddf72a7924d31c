"""The check: forward and decisions against the reference, gradients against the reference and against central
finite differences of the target's own loss, stepping only within a smooth piece."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from caffe_mining.gradcheck.problem import Problem, draw_inputs
from caffe_mining.gradcheck.report import CheckReport, Row, compare
from caffe_mining.tolerances import TOLERANCES
from caffe_mining.sampling import LayerUniforms

__all__ = ["check"]


def _same_pieces(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _stable(problem: Problem, inputs: Dict[str, np.ndarray], size: float, rng: np.random.Generator) -> bool:
    """No decision or kink within ``size`` (relative) of the base point along a few random directions."""
    base = problem.pieces(inputs)
    for _ in range(3):
        direction = {k: (rng.normal(size=v.shape) * size * max(1.0, float(np.max(np.abs(v))))
                         if k in problem.spec.differentiable else 0.0) for k, v in inputs.items()}
        for sign in (1.0, -1.0):
            moved = {k: v + sign * direction[k] for k, v in inputs.items()}
            if not np.array_equal(problem.pieces(moved), base):
                return False
    return True


def _richardson_difference(problem: Problem, target, x: Dict[str, np.ndarray], bottom: str, k: int, h: float,
                           base_pieces: np.ndarray, base_decisions) -> Optional[Tuple[float, float]]:
    """d(loss_weight * E)/dx_k by central differences at steps h and h/2 combined by Richardson extrapolation,
    (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4) instead of O(h^2) (float32 needs a large h), and a bound
    of its error: |D(h/2) - D(h)| (truncation, with a safety factor of about 3) plus 6 eps |E| / h (the target's
    rounding of E, a few units in its last place, through the combination: (4 * 2 + 1) / 3 = 3 rounding errors of
    2 eps |E| each, over h). None when a point lies on another smooth piece than x (per the reference) or the target
    decides differently there."""
    estimates, magnitude = [], 0.0
    for step in (h, h / 2):
        points = []
        for sign in (1.0, -1.0):
            moved = dict(x)
            flat = x[bottom].copy().reshape(-1)
            flat[k] += sign * step
            # The point as the target's dtype represents it (the step actually taken).
            moved[bottom] = flat.astype(target.dtype).astype(np.float64).reshape(x[bottom].shape)
            if not np.array_equal(problem.pieces(moved), base_pieces):
                return None
            evaluation = target.evaluate(moved, backward=False)
            if base_decisions is not None and not _same_pieces(evaluation.decisions, base_decisions):
                return None
            points.append((moved[bottom].reshape(-1)[k], evaluation.loss))
            magnitude = max(magnitude, abs(evaluation.loss))
        (x_plus, e_plus), (x_minus, e_minus) = points
        estimates.append(problem.loss_weight * (e_plus - e_minus) / (x_plus - x_minus))
    rounding = 6.0 * float(np.finfo(target.dtype).eps) * magnitude * abs(problem.loss_weight) / h
    return (4.0 * estimates[1] - estimates[0]) / 3.0, abs(estimates[1] - estimates[0]) + rounding


def check(problem: Problem, target, n: int, dim: int, seed: int = 0,
          inputs: Optional[Dict[str, np.ndarray]] = None, max_fd_coords: int = 256,
          max_redraws: int = 20) -> CheckReport:
    """Checks ``target`` (FunctionTarget or PycaffeTarget) on random inputs of n pairs of dim values.

    Returns a CheckReport; ``report.passed`` says whether every comparison is within TOLERANCES[target.dtype].
    """
    rng = np.random.default_rng(seed)
    tols = TOLERANCES[target.dtype]
    notes: List[str] = []
    if problem.uniforms is None and problem.options.draws_uniforms:
        problem.uniforms = LayerUniforms(problem.options.seed).next(n)

    # 1. A base point away from near ties, where the target decides as the reference does.
    redraws = 0
    while True:
        x = inputs if inputs is not None else draw_inputs(problem, n, dim, rng, target.dtype)
        base = target.evaluate(x)
        ref = problem.reference(x)
        agrees = base.decisions is None or _same_pieces(base.decisions, problem.decisions(ref))
        if inputs is not None or redraws >= max_redraws or (agrees and _stable(problem, x, tols.stability, rng)):
            break
        redraws += 1
    if redraws:
        notes.append(f"note: base point redrawn {redraws} time(s) (near tie or kink)")

    rows = [compare("forward", "loss", base.loss, ref.loss, tols.reference)]
    if base.decisions is not None:
        mismatched = sum(int(np.sum(a != b)) for a, b in zip(base.decisions, problem.decisions(ref)))
        rows.append(Row("decisions", "-", float(mismatched), 0.0 if not mismatched else 1.0, 0.0, mismatched == 0,
                        "" if not mismatched else f"{mismatched} differ from the reference"))
    ref_grads = {b: np.asarray(getattr(ref, f), np.float64).reshape(x[b].shape)
                 for b, f in zip(problem.spec.differentiable, problem.spec.grad_fields)}
    for b in problem.spec.differentiable:
        rows.append(compare("reference gradient", b, base.grads[b], ref_grads[b], tols.reference))

    # 2. Central differences of the target's own loss, stepping only within a smooth piece.
    slack = problem.guard_slack(x)  # per pair
    if np.any(slack):
        notes.append(f"note: finite differences allow |gradient| * 1e-4 / d more on open dissimilar pairs (up to "
                     f"{np.max(slack):.1e} relative): the layer's (m - d)/(d + 1e-4) is Caffe's guarded gradient")
    base_pieces = problem.pieces(x)
    for b in problem.spec.differentiable:
        size = x[b].size
        coords = np.arange(size) if size <= max_fd_coords else np.sort(rng.choice(size, max_fd_coords, False))
        fd, fd_error, used, retried, skipped = [], [], [], 0, 0
        for k in coords:
            for attempt, h in enumerate((tols.step, tols.step / 4, tols.step / 16)):
                estimate = _richardson_difference(problem, target, x, b, int(k), h, base_pieces, base.decisions)
                if estimate is None:
                    continue  # a kink or a decision between x - h and x + h
                fd.append(estimate[0])
                fd_error.append(estimate[1])
                used.append(k)
                retried += attempt > 0
                break
            else:
                skipped += 1
        note = f"{len(used)}/{size} coords"
        note += f", {retried} with a smaller step" if retried else ""
        note += f", {skipped} left out (kink)" if skipped else ""
        if not used:
            rows.append(Row("finite differences", b, float("nan"), float("nan"), 0.0, False,
                            note + ": no coordinate left to check"))
            continue
        used = np.array(used)
        got = base.grads[b].reshape(-1)[used]
        allowance = np.abs(got) * slack[used // (size // n)] + np.array(fd_error)
        rows.append(compare("finite differences", b, got, np.array(fd), tols.finite_difference, allowance, note))

    o = problem.options
    described = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(o).items() if v is not None)
    title = (f"gradcheck {problem.spec.type_name} [{described}] loss_weight={problem.loss_weight}\n"
             f"target: {target.name} ({target.dtype}, {target.device})  n={n} dim={dim} seed={seed}")
    return CheckReport(title, rows, notes)
