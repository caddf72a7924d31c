"""MiningContrastiveLoss's NumPy reference, written from the math (see caffe_mining.reference)."""
from __future__ import annotations

import numpy as np

from caffe_mining.losses.contrastive import ContrastiveResult
from caffe_mining.reference._features import as_2d_features as _as_2d_features

__all__ = [
    "CAFFE_DIST_GUARD",
    "mining_contrastive_loss",
    "mining_order",
]


#: Caffe's ContrastiveLoss divides by (d + 1e-4) in its backward pass instead of d, so that a dissimilar pair
#: at distance 0 gets a finite (zero) gradient; the mining layer keeps it so that mining_ratio = 1 reproduces
#: ContrastiveLoss exactly.  The loss itself uses the exact d.
CAFFE_DIST_GUARD = 1e-4


def mining_order(cost: np.ndarray, similar: np.ndarray) -> np.ndarray:
    """Order in which the mining rule picks pairs: all N indices, first pick first.

    Within a kind, harder (larger cost) comes first and equal costs go to the lower index.  The kinds alternate,
    starting with a similar pair; when one kind runs out the rest of the other follows.  Picking K pairs means
    taking the first K entries.
    """
    cost = np.asarray(cost, dtype=np.float64)
    similar = np.asarray(similar, dtype=bool)
    index = np.arange(cost.size)
    sim_idx, dis_idx = index[similar], index[~similar]
    # lexsort sorts by the last key first: descending cost, then ascending index.
    sim_sorted = sim_idx[np.lexsort((sim_idx, -cost[sim_idx]))]
    dis_sorted = dis_idx[np.lexsort((dis_idx, -cost[dis_idx]))]
    n_sim, n_dis = sim_sorted.size, dis_sorted.size
    # Position in the interleaved sequence s0 d0 s1 d1 ...; once a kind is exhausted the other one continues.
    j_sim = np.arange(n_sim)
    j_dis = np.arange(n_dis)
    slot = np.empty(cost.size, dtype=np.int64)
    slot[sim_sorted] = j_sim + np.minimum(j_sim, n_dis)
    slot[dis_sorted] = j_dis + np.minimum(j_dis + 1, n_sim)
    order = np.empty(cost.size, dtype=np.int64)
    order[slot] = index
    return order


def mining_contrastive_loss(
    feat: np.ndarray,
    feat_p: np.ndarray,
    sim: np.ndarray,
    margin: float = 1.0,
    legacy_version: bool = False,
    mining_ratio: int = 1,
    loss_weight: float = 1.0,
    backward: bool = True,
    dist_guard: float = CAFFE_DIST_GUARD,
) -> ContrastiveResult:
    r"""Contrastive loss of Hadsell et al. (2006) over the hardest 1/mining_ratio of the pairs.

    .. math::

        d_i^2 = \lVert a_i - b_i \rVert^2, \qquad
        c_i = \begin{cases} d_i^2 & y_i = 1 \\ \max(m - d_i, 0)^2 & y_i = 0 \\
                            \max(m - d_i^2, 0) & y_i = 0,\ \text{legacy} \end{cases}, \qquad
        E = \frac{1}{2K} \sum_{i \in P} c_i

    with :math:`K = \lfloor N / \text{mining\_ratio} \rfloor` and :math:`P` the first K pairs of
    :func:`mining_order` (alternately the hardest similar and dissimilar pair).  K = 0 gives E = 0 and zero
    gradients.  Gradients (pairs outside P get zero):

    .. math::

        \frac{\partial E}{\partial a_i} = -\frac{\partial E}{\partial b_i} = \frac{1}{K} \begin{cases}
            a_i - b_i & y_i = 1 \\ -\frac{m - d_i}{d_i + \delta} (a_i - b_i) & y_i = 0,\ d_i < m \\
            -(a_i - b_i) & y_i = 0,\ \text{legacy},\ d_i^2 < m \end{cases}

    where :math:`\delta` is ``dist_guard`` (Caffe's 1e-4; pass 0 for the exact derivative of E).

    Args:
        feat, feat_p: (N, D) or (N, D, 1, 1) features a and b.
        sim: N labels, 1 = similar pair, 0 = dissimilar pair.
        margin: m.  legacy_version: use max(m - d^2, 0).  mining_ratio: integer >= 1.
        loss_weight: the top's diff; scales both gradients (not the loss).
        backward: False gives None for the gradients (kept for the bindings' signature).
        dist_guard: the delta above.

    Example:
        >>> r = mining_contrastive_loss(np.zeros((2, 3)), np.ones((2, 3)), [1, 0], mining_ratio=1)
        >>> r.loss  # (3 + max(1 - sqrt(3), 0)^2) / 4
        0.75
    """
    a = _as_2d_features(feat, "feat")
    b = _as_2d_features(feat_p, "feat_p")
    if a.shape != b.shape:
        raise ValueError(f"feat and feat_p must have the same shape. Got: {a.shape} and {b.shape}")
    n = a.shape[0]
    y = np.asarray(sim, dtype=np.float64).reshape(-1)
    if y.size != n:
        raise ValueError(f"sim must hold N = {n} labels. Got: {y.size}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"sim labels must be 0 or 1. Got: {np.unique(y)}")
    if int(mining_ratio) != mining_ratio or mining_ratio < 1:
        raise ValueError(f"mining_ratio must be an integer >= 1. Got: {mining_ratio}")
    similar = y == 1

    diff = a - b
    dist_sq = np.einsum("ij,ij->i", diff, diff)
    dist = np.sqrt(dist_sq)
    if legacy_version:
        hinge = margin - dist_sq
        dis_cost = np.maximum(hinge, 0.0)
        # d(max(m - d^2, 0))/da = -2 (a - b) where the hinge is open.
        dis_coef = np.where(hinge > 0, -2.0, 0.0)
    else:
        hinge = margin - dist
        dis_cost = np.maximum(hinge, 0.0) ** 2
        # d(max(m - d, 0)^2)/da = -2 (m - d) / d * (a - b), with Caffe's guard on d.
        dis_coef = np.where(hinge > 0, -2.0 * hinge / (dist + dist_guard), 0.0)
    cost = np.where(similar, dist_sq, dis_cost)
    coef = np.where(similar, 2.0, dis_coef)  # dc_i/da_i = coef_i * (a_i - b_i)

    k = n // int(mining_ratio)
    picked = np.zeros(n, dtype=bool)
    picked[mining_order(cost, similar)[:k]] = True
    grad = np.zeros_like(a)
    loss = 0.0
    if k > 0:
        loss = float(cost[picked].sum() / (2.0 * k))
        grad[picked] = (loss_weight * coef[picked] / (2.0 * k))[:, None] * diff[picked]
    hinge_open = similar | (hinge > 0)
    pieces = (2 * picked + hinge_open).astype(np.int8)
    if not backward:
        return ContrastiveResult(loss, None, None, picked, cost, pieces)
    shape = np.shape(feat)
    return ContrastiveResult(loss, grad.reshape(shape), (-grad).reshape(shape), picked, cost, pieces)
