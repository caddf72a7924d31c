"""The gradient check's one tolerance table, by the target's dtype."""
from __future__ import annotations

from typing import Dict, NamedTuple

__all__ = ["TOLERANCES", "DtypeTolerances", "Tolerance"]


class Tolerance(NamedTuple):
    """|target - expected| <= atol + rtol * scale, scale = the largest |expected| of the compared quantity."""

    atol: float
    rtol: float


class DtypeTolerances(NamedTuple):
    reference: Tolerance  # target vs reference, same inputs
    finite_difference: Tolerance  # target's gradient vs central differences of its own loss
    step: float  # first finite-difference step (then step/4, step/16 when a kink is crossed)
    stability: float  # perturbation size for the near-tie test of a base point


#: The one tolerance table, by the target's dtype.
#: reference: the target and the reference compute the same formula on the same inputs, so only rounding differs
#:   (float64 ~1e-15 relative; float32 ~1e-7 per operation, 1e-6..1e-5 after the N x N distance GEMM's cancellation).
#: finite_difference: Richardson-extrapolated central differences (error O(h^4)); each coordinate is further allowed
#:   its own error bound (see _richardson_difference): the truncation estimate |D(h/2) - D(h)| and the target's
#:   rounding of E (6 eps |E| / h: float32's loss top holds E to ~1e-7 relative, so a step of 1e-2 resolves a
#:   gradient to ~1e-4 |E| and smaller steps, taken only next to a kink, less). float32 uses Caffe's
#:   GradientChecker step 1e-2; float64 uses 1e-4 (truncation (h/d)^4 and rounding 1e-16/h both ~1e-12).
TOLERANCES: Dict[str, DtypeTolerances] = {
    "float64": DtypeTolerances(reference=Tolerance(atol=1e-12, rtol=1e-9),
                               finite_difference=Tolerance(atol=1e-10, rtol=1e-7), step=1e-4, stability=1e-9),
    "float32": DtypeTolerances(reference=Tolerance(atol=1e-6, rtol=1e-4),
                               finite_difference=Tolerance(atol=1e-5, rtol=1e-3), step=1e-2, stability=1e-4),
}
