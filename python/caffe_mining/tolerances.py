"""The one tolerance table: how closely one computation of a loss must match another, by dtype.

Used by the gradient check (:mod:`caffe_mining.gradcheck`: ``reference``, ``finite_difference``, ``step``,
``stability``) and by the tests that compare the core with the reference (``core_vs_reference``) and the CUDA
core with the CPU core (``device_vs_host``).
"""
from __future__ import annotations

from typing import Dict, NamedTuple

__all__ = ["TOLERANCES", "DtypeTolerances", "Tolerance"]


class Tolerance(NamedTuple):
    """|got - expected| <= atol + rtol * scale, scale = the largest |expected| of the compared quantity."""

    atol: float
    rtol: float


class DtypeTolerances(NamedTuple):
    reference: Tolerance  # gradcheck: target vs reference, same inputs
    finite_difference: Tolerance  # gradcheck: target's gradient vs central differences of its own loss
    step: float  # gradcheck: first finite-difference step (then step/4, step/16 when a kink is crossed)
    stability: float  # gradcheck: perturbation size for the near-tie test of a base point
    core_vs_reference: Tolerance  # the bindings against the reference on the same inputs, elementwise
    device_vs_host: Tolerance  # the CUDA core against the CPU core, elementwise


#: The table, by dtype (the target's, for the gradient check).
#: reference: the target and the reference compute the same formula on the same inputs, so only rounding differs
#:   (float64 ~1e-15 relative; float32 ~1e-7 per operation, 1e-6..1e-5 after the N x N distance GEMM's cancellation).
#: finite_difference: Richardson-extrapolated central differences (error O(h^4)); each coordinate is further allowed
#:   its own error bound (see gradcheck.finite_differences): the truncation estimate |D(h/2) - D(h)| and the
#:   target's rounding of E (6 eps |E| / h: float32's loss top holds E to ~1e-7 relative, so a step of 1e-2 resolves a
#:   gradient to ~1e-4 |E| and smaller steps, taken only next to a kink, less). float32 uses Caffe's
#:   GradientChecker step 1e-2; float64 uses 1e-4 (truncation (h/d)^4 and rounding 1e-16/h both ~1e-12).
#: core_vs_reference: float64 differs by summation order only; float32 rounds every operation, and the distance
#:   GEMM's cancellation (|a|^2 + |p|^2 - 2 a.p) costs a few more digits.
#: device_vs_host: summation order (GEMM tiling, reductions), FMA contraction and the device's expf/log1pf; the
#:   absolute slack is rtol times the array's largest value (atol 0).
TOLERANCES: Dict[str, DtypeTolerances] = {
    "float64": DtypeTolerances(reference=Tolerance(atol=1e-12, rtol=1e-9),
                               finite_difference=Tolerance(atol=1e-10, rtol=1e-7), step=1e-4, stability=1e-9,
                               core_vs_reference=Tolerance(atol=1e-13, rtol=1e-10),
                               device_vs_host=Tolerance(atol=0.0, rtol=1e-10)),
    "float32": DtypeTolerances(reference=Tolerance(atol=1e-6, rtol=1e-4),
                               finite_difference=Tolerance(atol=1e-5, rtol=1e-3), step=1e-2, stability=1e-4,
                               core_vs_reference=Tolerance(atol=2e-6, rtol=2e-4),
                               device_vs_host=Tolerance(atol=0.0, rtol=1e-4)),
}
