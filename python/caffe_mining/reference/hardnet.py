"""HardNetLoss's NumPy reference, written from the math (see caffe_mining.reference)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffe_mining.losses.hardnet import BATCH_REDUCES, LOSS_TYPES, HardNetResult
from caffe_mining.reference._features import as_2d_features as _as_2d_features

__all__ = [
    "hardnet_distance_matrix",
    "hardnet_loss",
]


def hardnet_distance_matrix(anchor: np.ndarray, positive: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    r"""The N x N matrix :math:`D_{ij} = \sqrt{\max(\lVert a_i\rVert^2 + \lVert p_j\rVert^2 - 2 a_i^\top p_j, 0)
    + \epsilon}` (rows: anchors, columns: positives)."""
    a = _as_2d_features(anchor, "anchor")
    p = _as_2d_features(positive, "positive")
    sq = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", p, p)[None, :] - 2.0 * a @ p.T
    return np.sqrt(np.maximum(sq, 0.0) + eps)


def _row_loss(loss_type: str, margin: float, pos: np.ndarray, neg: np.ndarray):
    """l(pos, neg), dl/dpos, dl/dneg and whether the hinge is open, elementwise (hinges: derivative 0 at the
    kink)."""
    if loss_type == "TRIPLET_MARGIN":
        hinge = margin + pos - neg
        open_ = hinge > 0
        return np.maximum(hinge, 0.0), open_ * 1.0, open_ * -1.0, open_
    if loss_type == "SOFTMAX":
        x = pos - neg
        sigmoid = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
        return np.logaddexp(0.0, x), sigmoid, -sigmoid, np.ones(np.shape(x), dtype=bool)
    hinge = margin - neg  # CONTRASTIVE
    open_ = hinge > 0
    return np.maximum(hinge, 0.0) + pos, np.ones(np.shape(pos)), open_ * -1.0, open_


def hardnet_loss(
    anchor: np.ndarray,
    positive: np.ndarray,
    labels: Optional[np.ndarray] = None,
    margin: float = 1.0,
    anchor_swap: bool = False,
    batch_reduce: str = "MIN",
    loss_type: str = "TRIPLET_MARGIN",
    eps: float = 1e-6,
    duplicate_threshold: float = 0.008,
    uniforms: Optional[np.ndarray] = None,
    loss_weight: float = 1.0,
    backward: bool = True,
) -> HardNetResult:
    r"""HardNet loss (Mishchuk et al. 2017) with in-batch negative mining.

    .. math::

        D_{ij} = \sqrt{\max(\lVert a_i\rVert^2 + \lVert p_j\rVert^2 - 2 a_i^\top p_j, 0) + \epsilon},
        \qquad E = \frac{1}{R} \sum_{i \in \mathcal{R}} \ell(D_{ii}, c_{i j_i})

    Candidate j of row i (j != i) is valid when D_ij >= duplicate_threshold and (labels given) y_i != y_j; its
    value is c_ij = D_ij.  With ``anchor_swap`` D_ji (anchor j against positive i) is a second chance: the
    candidate is valid when either is, and its value is the smaller valid one (D_ij at equal value).
    :math:`\mathcal{R}` are the rows with a valid candidate (R of them; E = 0 when R = 0).

    * MIN: :math:`j_i = \arg\min_j c_{ij}` (ties: lowest j).
    * RANDOM: the :math:`\lfloor u_i \cdot count_i \rfloor`-th valid candidate in increasing j.
    * AVERAGE: the row term is :math:`\frac{1}{count_i} \sum_{j\ valid} \ell(D_{ii}, c_{ij})`; the reported
      negative is the MIN one.

    Row loss: TRIPLET_MARGIN :math:`\max(m + d^+ - d^-, 0)`, SOFTMAX :math:`\log(1 + e^{d^+ - d^-})`,
    CONTRASTIVE :math:`\max(m - d^-, 0) + d^+`.  The gradient is the exact derivative (0 at a hinge's kink),
    through :math:`\partial D_{ij}/\partial a_i = -\partial D_{ij}/\partial p_j = (a_i - p_j)/D_{ij}`.

    Args:
        anchor, positive: (N, D) or (N, D, 1, 1); row i of both is a matching pair.
        labels: optional N class ids; same-class pairs are never negatives.
        uniforms: N values in [0, 1), required for RANDOM.
        loss_weight: the top's diff; scales the gradients.
        backward: False gives None for the gradients (kept for the bindings' signature).

    Example:
        >>> a = np.array([[0.0, 0.0], [1.0, 0.0]]); p = np.array([[0.0, 0.1], [1.0, 0.1]])
        >>> round(hardnet_loss(a, p).loss, 6)  # both rows: max(1 + sqrt(0.01 + eps) - sqrt(1.01 + eps), 0)
        0.095017
    """
    a = _as_2d_features(anchor, "anchor")
    p = _as_2d_features(positive, "positive")
    if a.shape != p.shape:
        raise ValueError(f"anchor and positive must have the same shape. Got: {a.shape} and {p.shape}")
    batch_reduce, loss_type = batch_reduce.upper(), loss_type.upper()
    if batch_reduce not in BATCH_REDUCES:
        raise ValueError(f"batch_reduce must be one of {BATCH_REDUCES}. Got: {batch_reduce!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}. Got: {loss_type!r}")
    n = a.shape[0]
    dist = hardnet_distance_matrix(a, p, eps)
    pos = np.diag(dist).copy()

    valid = ~np.eye(n, dtype=bool) & (dist >= duplicate_threshold)
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if y.size != n:
            raise ValueError(f"labels must hold N = {n} values. Got: {y.size}")
        valid &= y[:, None] != y[None, :]
    if anchor_swap:
        # swapped[i, j]: candidate j of row i takes D_ji (valid, and smaller than a valid D_ij or D_ij invalid).
        swapped = valid.T & (~valid | (dist.T < dist))
        value = np.where(swapped, dist.T, dist)
        valid = valid | valid.T
    else:
        swapped = np.zeros((n, n), dtype=bool)
        value = dist
    count = valid.sum(axis=1)
    rows = count > 0
    num_rows = int(rows.sum())

    rank_in_row = np.cumsum(valid, axis=1) - 1
    hardest = np.argmin(np.where(valid, value, np.inf), axis=1)  # first minimum: lowest j
    if batch_reduce == "RANDOM":
        if uniforms is None:
            raise ValueError("batch_reduce RANDOM needs uniforms (N values in [0, 1))")
        u = np.asarray(uniforms, dtype=np.float64).reshape(-1)
        if u.size != n or not np.all((u >= 0) & (u < 1)):
            raise ValueError(f"uniforms must be N = {n} values in [0, 1). Got: {u}")
        rank = np.minimum(np.floor(u * count), np.maximum(count - 1, 0)).astype(np.int64)
        chosen = np.argmax(valid & (rank_in_row == rank[:, None]), axis=1)
    else:
        chosen = hardest
    row_index = np.arange(n)
    neg_index = np.where(rows, chosen, -1)
    neg_swapped = rows & swapped[row_index, chosen]
    neg_dist = np.where(rows, value[row_index, chosen], 0.0)

    # dE/dD accumulated into one N x N matrix, then one chain rule through D for every mode.
    dloss_ddist = np.zeros((n, n))
    pieces = np.zeros((n, n), dtype=np.int8)
    scale = loss_weight / num_rows if num_rows else 0.0
    if batch_reduce == "AVERAGE":
        loss_ij, dpos_ij, dneg_ij, open_ij = _row_loss(loss_type, margin, pos[:, None], value)
        per_candidate = np.where(valid, 1.0 / np.maximum(count, 1)[:, None], 0.0)
        row_loss = (loss_ij * per_candidate).sum(axis=1)
        dloss_ddist[row_index, row_index] = scale * (dpos_ij * per_candidate).sum(axis=1)
        dneg = scale * dneg_ij * per_candidate
        dloss_ddist += np.where(swapped, 0.0, dneg) + np.where(swapped, dneg, 0.0).T
        pieces[valid] = (1 + 2 * swapped + 4 * open_ij)[valid]
    else:
        row_loss, dpos, dneg, open_row = _row_loss(loss_type, margin, pos, neg_dist)
        row_loss = np.where(rows, row_loss, 0.0)
        dloss_ddist[row_index, row_index] = np.where(rows, scale * dpos, 0.0)
        neg_row = np.where(neg_swapped, chosen, row_index)[rows]  # D_ij or, swapped, D_ji
        neg_col = np.where(neg_swapped, row_index, chosen)[rows]
        np.add.at(dloss_ddist, (neg_row, neg_col), scale * dneg[rows])
        pieces[row_index[rows], chosen[rows]] = (1 + 2 * neg_swapped + 4 * open_row)[rows]
    loss = float(row_loss[rows].sum() / num_rows) if num_rows else 0.0
    if not backward:
        return HardNetResult(loss, None, None, neg_index.astype(np.int64), neg_swapped, count.astype(np.int64), pos,
                             neg_dist, pieces)

    # dD_ij/da_i = (a_i - p_j) / D_ij,  dD_ij/dp_j = (p_j - a_i) / D_ij.
    weight = dloss_ddist / dist
    grad_a = a * weight.sum(axis=1)[:, None] - weight @ p
    grad_p = p * weight.sum(axis=0)[:, None] - weight.T @ a
    return HardNetResult(loss, grad_a.reshape(np.shape(anchor)), grad_p.reshape(np.shape(positive)),
                         neg_index.astype(np.int64), neg_swapped, count.astype(np.int64), pos, neg_dist, pieces)
