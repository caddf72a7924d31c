"""MarginLoss's NumPy reference (Wu et al. 2017, "Sampling Matters in Deep Embedding Learning"), written from
the math (see caffe_mining.reference)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffe_mining.losses.margin import MarginResult
from caffe_mining.reference._features import as_2d_features as _as_2d_features

__all__ = [
    "margin_distance_matrix",
    "margin_loss",
    "margin_sampling_weights",
    "margin_triplets",
    "margin_uniforms",
    "philox4x32_10",
]


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
