"""TripletLoss's NumPy reference, written from the math (see caffe_mining.reference)."""
from __future__ import annotations

import numpy as np

from caffe_mining.losses.triplet import MININGS, TripletResult
from caffe_mining.reference._features import as_2d_features as _as_2d_features

__all__ = [
    "triplet_distance_matrix",
    "triplet_loss",
]


def triplet_distance_matrix(x: np.ndarray, eps: float = 1e-12, squared: bool = False) -> np.ndarray:
    r"""The N x N matrix :math:`D_{ij} = \sqrt{\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i^\top x_j, 0)
    + \epsilon}`, or :math:`\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i^\top x_j, 0)` when squared."""
    norms = np.einsum("ij,ij->i", x, x)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * x @ x.T, 0.0)
    return sq if squared else np.sqrt(sq + eps)


def _triplet_term(margin: float, soft_margin: bool, d_ap: np.ndarray, d_an: np.ndarray):
    """l(d_ap, d_an), its slope dl/dd_ap (= -dl/dd_an) and whether the term is active (l > 0 as computed: a soft
    term is 0 only where e^(d_ap - d_an) underflows), elementwise."""
    if soft_margin:
        x = d_ap - d_an
        loss = np.logaddexp(0.0, x)
        return loss, 0.5 * (1.0 + np.tanh(0.5 * x)), loss > 0
    hinge = margin + d_ap - d_an
    open_ = hinge > 0
    return np.maximum(hinge, 0.0), open_ * 1.0, open_


def triplet_loss(
    embedding: np.ndarray,
    labels: np.ndarray,
    margin: float = 0.2,
    soft_margin: bool = False,
    squared: bool = False,
    mining: str = "BATCH_HARD",
    eps: float = 1e-12,
    loss_weight: float = 1.0,
    backward: bool = True,
) -> TripletResult:
    r"""Triplet loss over one labelled batch, its triplets mined in the batch.

    .. math::

        D_{ij} = \sqrt{\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i^\top x_j, 0) + \epsilon}
        \ (\text{squared: no root, no } \epsilon), \qquad
        \ell(d^+, d^-) = \max(m + d^+ - d^-, 0) \ \text{or (soft margin)}\ \log(1 + e^{d^+ - d^-})

    Positives of anchor a: the other rows of its class; negatives: the rows of other classes.

    * BATCH_HARD: every anchor with a positive and a negative gives :math:`\ell(\max_p D_{ap}, \min_n D_{an})`
      (ties: lowest index); E is their mean.
    * BATCH_ALL: every (a, p, n) gives :math:`\ell(D_{ap}, D_{an})`; E is their sum over K, the number of terms
      with :math:`\ell > 0` (0 when K = 0).
    * SEMI_HARD: every ordered positive pair (a, p) of an anchor with a negative gives :math:`\ell(D_{ap}, D_{an})`,
      n the closest negative with :math:`D_{an} > D_{ap}`, else the farthest negative (ties: lowest index); E is
      their mean.

    No term at all gives E = 0 and a zero gradient. The gradient is the exact derivative (0 at a hinge's kink, K
    held constant), through :math:`\partial D_{ij}/\partial x_i = (x_i - x_j)/D_{ij}` (squared: :math:`2(x_i - x_j)`).

    Example:
        >>> x = np.array([[0.0, 0.0], [0.0, 0.5], [1.0, 0.0]]); y = np.array([0, 0, 1])
        >>> r = triplet_loss(x, y, margin=1.0)  # anchors 0 and 1: max(1 + 0.5 - D_a2, 0)
        >>> round(r.loss, 6), r.triplets.tolist(), r.terms
        (0.440983, [[0, 1, 2], [1, 0, 2], [2, -1, -1]], 2)
    """
    x = _as_2d_features(embedding, "embedding")
    n = x.shape[0]
    mining = mining.upper()
    if mining not in MININGS:
        raise ValueError(f"mining must be one of {MININGS}. Got: {mining!r}")
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size != n:
        raise ValueError(f"labels must hold N = {n} values. Got: {y.size}")
    same = y[:, None] == y[None, :]
    is_pos = same & ~np.eye(n, dtype=bool)
    is_neg = ~same
    dist = triplet_distance_matrix(x, eps, squared)
    dloss_ddist = np.zeros((n, n))  # d(sum of the terms) / dD, by (anchor, other row)

    if mining == "BATCH_HARD":
        gives = is_pos.any(axis=1) & is_neg.any(axis=1)
        hardest_pos = np.argmax(np.where(is_pos, dist, -np.inf), axis=1)  # first maximum: lowest index
        hardest_neg = np.argmin(np.where(is_neg, dist, np.inf), axis=1)
        a = np.flatnonzero(gives)
        p, k = hardest_pos[a], hardest_neg[a]
        loss_terms, slope, open_ = _triplet_term(margin, soft_margin, dist[a, p], dist[a, k])
        count = a.size
        np.add.at(dloss_ddist, (a, p), slope)
        np.add.at(dloss_ddist, (a, k), -slope)
        triplets = np.stack([np.arange(n), np.where(gives, hardest_pos, -1), np.where(gives, hardest_neg, -1)], 1)
        pieces = np.concatenate([p, k, open_])
    elif mining == "SEMI_HARD":
        pair_a, pair_p = np.nonzero(is_pos)  # increasing (a, p)
        gives = is_neg[pair_a].any(axis=1)
        d_ap = dist[pair_a, pair_p]
        rows = dist[pair_a]
        beyond = is_neg[pair_a] & (rows > d_ap[:, None])
        closest_beyond = np.argmin(np.where(beyond, rows, np.inf), axis=1)
        farthest = np.argmax(np.where(is_neg[pair_a], rows, -np.inf), axis=1)
        chosen = np.where(beyond.any(axis=1), closest_beyond, farthest)
        a, p, k = pair_a[gives], pair_p[gives], chosen[gives]
        loss_terms, slope, open_ = _triplet_term(margin, soft_margin, dist[a, p], dist[a, k])
        count = a.size
        np.add.at(dloss_ddist, (a, p), slope)
        np.add.at(dloss_ddist, (a, k), -slope)
        triplets = np.stack([pair_a, pair_p, np.where(gives, chosen, -1)], 1).reshape(-1, 3)
        pieces = np.concatenate([k, open_])
    else:  # BATCH_ALL: term (a, p, k) of the n^3 tensor, masked
        valid = is_pos[:, :, None] & is_neg[:, None, :]
        all_terms, all_slopes, _ = _triplet_term(margin, soft_margin, dist[:, :, None], dist[:, None, :])
        all_terms, all_slopes = np.where(valid, all_terms, 0.0), np.where(valid, all_slopes, 0.0)
        active = valid & (all_terms > 0)
        loss_terms = all_terms[valid]
        count = int(active.sum())
        dloss_ddist += all_slopes.sum(axis=2) - all_slopes.sum(axis=1)
        triplets = np.zeros((0, 3), dtype=np.int64)
        pieces = active.reshape(-1)

    scale = 1.0 / count if count else 0.0
    loss = float(loss_terms.sum() * scale)
    triplets = triplets.astype(np.int64)
    pieces = np.asarray(pieces, dtype=np.int64)
    if not backward:
        return TripletResult(loss, None, triplets, count, pieces)
    # D_aj depends on x_a and x_j: dD_aj/dx_a = -dD_aj/dx_j = (x_a - x_j) / D_aj (squared: 2 (x_a - x_j)).
    weight = loss_weight * scale * dloss_ddist * (2.0 if squared else 1.0 / dist)
    grad = (weight.sum(axis=1) + weight.sum(axis=0))[:, None] * x - weight @ x - weight.T @ x
    return TripletResult(loss, grad.reshape(np.shape(embedding)), triplets, count, pieces)
