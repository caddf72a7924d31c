"""The result of a check: one row per comparison, and how a comparison is made."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from caffe_mining.tolerances import Tolerance

__all__ = ["CheckReport", "Row", "compare"]


@dataclasses.dataclass
class Row:
    check: str
    bottom: str
    max_abs: float
    max_rel: float
    allowed: float
    passed: bool
    note: str = ""


@dataclasses.dataclass
class CheckReport:
    title: str
    rows: List[Row]
    notes: List[str]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def worst(self, check: str) -> float:
        """Largest max_rel among the rows of one check ('forward', 'reference gradient', 'finite differences')."""
        return max((row.max_rel for row in self.rows if row.check == check), default=0.0)

    def format(self) -> str:
        header = f"{'check':<20} {'bottom':<9} {'max abs err':>12} {'max rel err':>12} {'allowed abs':>12}  result"
        lines = [self.title, header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r.check:<20} {r.bottom:<9} {r.max_abs:>12.3e} {r.max_rel:>12.3e} {r.allowed:>12.3e}  "
                         f"{'pass' if r.passed else 'FAIL'}{'  ' + r.note if r.note else ''}")
        lines += self.notes
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def compare(check: str, bottom: str, got: np.ndarray, expected: np.ndarray, tol: Tolerance,
             extra: Optional[np.ndarray] = None, note: str = "") -> Row:
    """Compares elementwise: |got - expected| <= atol + rtol * max|expected| (+ extra, a per-element allowance)."""
    got, expected = np.asarray(got, np.float64).ravel(), np.asarray(expected, np.float64).ravel()
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = np.abs(got - expected)
    error[~np.isfinite(got) | ~np.isfinite(expected)] = np.inf
    allowed = tol.atol + tol.rtol * scale + (0.0 if extra is None else np.asarray(extra, np.float64).ravel())
    max_abs = float(np.max(error)) if error.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Row(check, bottom, max_abs, max_rel, float(np.max(allowed)) if np.size(allowed) else tol.atol,
               bool(np.all(error <= allowed)), note)
