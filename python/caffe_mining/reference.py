"""NumPy reference of the losses, written from the math (float64, vectorised).

This module is the independent oracle the C++ core, the bindings and the Caffe layers are checked against:
it shares no code with them.  Each function returns the loss, the exact gradient of that loss with respect to
every float input, and the mining decisions, as a :class:`ContrastiveResult`, :class:`HardNetResult`,
:class:`MarginResult` or :class:`TripletResult`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffe_mining.losses.contrastive import ContrastiveResult
from caffe_mining.losses.hardnet import BATCH_REDUCES, LOSS_TYPES, HardNetResult
from caffe_mining.losses.margin import MarginResult
from caffe_mining.losses.triplet import MININGS, TripletResult

__all__ = [
    "CAFFE_DIST_GUARD",
    "hardnet_distance_matrix",
    "hardnet_loss",
    "margin_distance_matrix",
    "margin_loss",
    "margin_sampling_weights",
    "margin_triplets",
    "margin_uniforms",
    "mining_contrastive_loss",
    "mining_order",
    "triplet_distance_matrix",
    "triplet_loss",
]

#: Caffe's ContrastiveLoss divides by (d + 1e-4) in its backward pass instead of d, so that a dissimilar pair
#: at distance 0 gets a finite (zero) gradient; the mining layer keeps it so that mining_ratio = 1 reproduces
#: ContrastiveLoss exactly.  The loss itself uses the exact d.
CAFFE_DIST_GUARD = 1e-4


def _as_2d_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and x.shape[2:] == (1, 1):  # Caffe's N x D x 1 x 1 blobs
        x = x.reshape(x.shape[0], x.shape[1])
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D) or (N, D, 1, 1). Got: {x.shape}")
    return x


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


# ---------------------------------------------------------------------------------------------------------------
# MarginLoss (Wu et al. 2017, "Sampling Matters in Deep Embedding Learning")

_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters: np.ndarray, key: tuple) -> np.ndarray:
    """Philox4x32-10 (Salmon et al. 2011) of each row of ``counters`` ((M, 4) unsigned 32-bit words) under
    ``key`` = (k0, k1): (M, 4) uint64 holding 32-bit words."""
    c = np.asarray(counters, dtype=np.uint64) & _MASK32
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(10):
        p0 = np.uint64(_PHILOX_MULTIPLIERS[0]) * c[:, 0]
        p1 = np.uint64(_PHILOX_MULTIPLIERS[1]) * c[:, 2]
        c = np.stack([(p1 >> np.uint64(32)) ^ c[:, 1] ^ np.uint64(k0), p1 & _MASK32,
                      (p0 >> np.uint64(32)) ^ c[:, 3] ^ np.uint64(k1), p0 & _MASK32], axis=1)
        k0, k1 = (k0 + _PHILOX_WEYL[0]) & 0xFFFFFFFF, (k1 + _PHILOX_WEYL[1]) & 0xFFFFFFFF
    return c


def margin_uniforms(seed: int, iteration: int, anchor, positive, draw) -> np.ndarray:
    """u in [0, 1) of draw ``draw`` for (anchor, positive) at ``iteration``: Philox4x32-10 of the counter
    (anchor, positive, draw, iteration mod 2^32) under the key (seed mod 2^32, seed // 2^32); 27 bits of word 0
    over 26 bits of word 1, / 2^53."""
    anchor, positive, draw = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.uint64)) for v in
                                                   (anchor, positive, draw)))
    counters = np.stack([anchor, positive, draw, np.full(anchor.shape, iteration % 2**32, np.uint64)], axis=1)
    words = philox4x32_10(counters, (seed % 2**32, seed // 2**32))
    bits = ((words[:, 0] >> np.uint64(5)) << np.uint64(26)) | (words[:, 1] >> np.uint64(6))
    return bits.astype(np.float64) / 2.0**53


def margin_distance_matrix(embedding: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """d_ij = sqrt(|x_i - x_j|^2 + eps), float64."""
    x = _as_2d_features(embedding, "embedding")
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2) + eps)


def margin_sampling_weights(embedding: np.ndarray, labels: np.ndarray, sampler: str = "DISTANCE_WEIGHTED",
                            cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, eps: float = 1e-8) -> np.ndarray:
    """The probability of drawing j as the negative of anchor i, (N, N), each row summing to 1 (or 0 when the
    anchor has no negative of non-zero weight).

    DISTANCE_WEIGHTED: p_ij ∝ 1/q(d̂), q(d) = d^(D-2) (1 - d^2/4)^((D-3)/2), d̂ = max(d, cutoff), with
    1 - d̂^2/4 floored at 1e-12; 0 for the anchor's own class and, when nonzero_loss_cutoff > 0, at
    d >= nonzero_loss_cutoff. UNIFORM: p_ij ∝ 1 over the other classes.
    """
    x = _as_2d_features(embedding, "embedding")
    y = np.asarray(labels).reshape(-1)
    other = y[:, None] != y[None, :]
    if sampler == "UNIFORM":
        weight = other.astype(np.float64)
    else:
        d = margin_distance_matrix(x, eps)
        dim = x.shape[1]
        clipped = np.maximum(d, cutoff)
        gap = np.maximum(1.0 - clipped ** 2 / 4.0, 1e-12)
        log_weight = -(dim - 2.0) * np.log(clipped) - (dim - 3.0) / 2.0 * np.log(gap)
        allowed = other & ((d < nonzero_loss_cutoff) if nonzero_loss_cutoff > 0 else True)
        log_weight = np.where(allowed, log_weight, -np.inf)
        row_max = log_weight.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            weight = np.where(allowed, np.exp(log_weight - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    return np.divide(weight, total, out=np.zeros_like(weight), where=total > 0)


def margin_triplets(embedding: np.ndarray, labels: np.ndarray, negatives_per_positive: int = 1,
                    sampler: str = "DISTANCE_WEIGHTED", cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                    eps: float = 1e-8, seed: int = 0, iteration: int = 0) -> np.ndarray:
    """The sampled triplets, (T, 3) int64 in order of (anchor, positive p != anchor of its class, draw r): the
    negative of draw r is the inverse CDF of the anchor's row of :func:`margin_sampling_weights` at
    u = :func:`margin_uniforms` (seed, iteration, anchor, p, r). Anchors without positives or without a drawable
    negative give none."""
    y = np.asarray(labels).reshape(-1)
    prob = margin_sampling_weights(embedding, y, sampler, cutoff, nonzero_loss_cutoff, eps)
    rows = []
    for a in range(len(y)):
        positives = np.flatnonzero((y == y[a]) & (np.arange(len(y)) != a))
        if len(positives) == 0 or prob[a].sum() == 0:
            continue
        p = np.repeat(positives, negatives_per_positive)
        r = np.tile(np.arange(negatives_per_positive), len(positives))
        u = margin_uniforms(seed, iteration, a, p, r)
        cdf = np.cumsum(prob[a])
        negative = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), np.flatnonzero(prob[a])[-1])
        rows.append(np.stack([np.full(len(p), a), p, negative], axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)


def margin_loss(
    embedding: np.ndarray,
    labels: np.ndarray,
    beta: Optional[np.ndarray] = None,
    margin: float = 0.2,
    beta_init: float = 1.2,
    nu: float = 0.0,
    num_classes: int = 0,
    negatives_per_positive: int = 1,
    sampler: str = "DISTANCE_WEIGHTED",
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    eps: float = 1e-8,
    seed: int = 0,
    iteration: int = 0,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
    triplets: Optional[np.ndarray] = None,
) -> MarginResult:
    r"""Margin loss over sampled triplets, with the exact gradients given the triplets.

    .. math::
        E = \frac{1}{C} \sum_{t=(a,p,n)} (d_{ap} - \beta_{c(a)} + \alpha)_+ + (\beta_{c(a)} - d_{an} + \alpha)_+
            + \nu \beta_{c(a)}

    with d_ij = sqrt(|x_i - x_j|^2 + eps), c(a) = y_a when num_classes > 0 else 0, alpha = margin, and C the
    number of non-zero hinge terms (E = 0 and zero gradients when C = 0). ``triplets`` None: drawn by
    :func:`margin_triplets`; else these (T, 3) rows are used. ``check_finite`` is accepted for the common
    signature (the reference computes with what it is given: NaN in, NaN out).
    """
    x = _as_2d_features(embedding, "embedding")
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    betas = max(1, num_classes)
    b = np.full(betas, float(beta_init)) if beta is None else np.asarray(beta, np.float64).reshape(betas)
    if triplets is None:
        triplets = margin_triplets(x, y, negatives_per_positive, sampler, cutoff, nonzero_loss_cutoff, eps, seed,
                                   iteration)
    t = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    a, p, n = t[:, 0], t[:, 1], t[:, 2]
    cls = y[a].astype(np.int64) if num_classes > 0 else np.zeros(len(a), np.int64)
    d_ap = np.sqrt(((x[a] - x[p]) ** 2).sum(axis=1) + eps)
    d_an = np.sqrt(((x[a] - x[n]) ** 2).sum(axis=1) + eps)
    pos_arg = d_ap - b[cls] + margin
    neg_arg = b[cls] - d_an + margin
    pos_on, neg_on = pos_arg > 0, neg_arg > 0
    count = int(pos_on.sum() + neg_on.sum())
    pieces = np.concatenate([t.reshape(-1), pos_on.astype(np.int64), neg_on.astype(np.int64)]).astype(np.int64)
    if count == 0:
        loss = 0.0
    else:
        loss = float((np.maximum(pos_arg, 0) + np.maximum(neg_arg, 0) + nu * b[cls]).sum() / count)
    if not backward:
        return MarginResult(loss, None, None, t, d_ap, d_an, count, pieces)
    grad_x = np.zeros_like(x)
    grad_b = np.zeros(betas)
    if count > 0:
        scale = loss_weight / count
        g_ap = scale * pos_on / d_ap  # dE/dd_ap / d_ap
        g_an = -scale * neg_on / d_an
        np.add.at(grad_x, a, g_ap[:, None] * (x[a] - x[p]) + g_an[:, None] * (x[a] - x[n]))
        np.add.at(grad_x, p, -g_ap[:, None] * (x[a] - x[p]))
        np.add.at(grad_x, n, -g_an[:, None] * (x[a] - x[n]))
        np.add.at(grad_b, cls, scale * (-pos_on.astype(np.float64) + neg_on + nu))
    shape = np.shape(embedding)
    return MarginResult(loss, grad_x.reshape(shape), grad_b, t, d_ap, d_an, count, pieces)


def triplet_distance_matrix(x: np.ndarray, eps: float = 1e-12, squared: bool = False) -> np.ndarray:
    r"""The N x N matrix :math:`D_{ij} = \sqrt{\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i^\top x_j, 0)
    + \epsilon}`, or :math:`\max(\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i^\top x_j, 0)` when squared."""
    norms = np.einsum("ij,ij->i", x, x)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * x @ x.T, 0.0)
    return sq if squared else np.sqrt(sq + eps)


def _triplet_term(margin: float, soft_margin: bool, d_ap: np.ndarray, d_an: np.ndarray):
    """l(d_ap, d_an), its slope dl/dd_ap (= -dl/dd_an) and whether the hinge is open, elementwise."""
    if soft_margin:
        x = d_ap - d_an
        return np.logaddexp(0.0, x), 0.5 * (1.0 + np.tanh(0.5 * x)), np.ones(np.shape(x), dtype=bool)
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
