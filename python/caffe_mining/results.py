"""What a loss evaluation returns, shared by the NumPy reference and the bindings so they compare field by field."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

__all__ = ["ContrastiveResult", "HardNetResult"]


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
