"""Verification and retrieval metrics of learned embeddings (NumPy only).

Conventions: a pair is *positive* (matching, similar) or *negative*; its score is a distance, smaller meaning
"more likely positive". These are the numbers the HardNet paper reports (FPR at 95 % recall on Brown's pairs)
plus ROC AUC, leave-one-out nearest-neighbour accuracy, and Recall@k of retrieval (as "Sampling Matters"
reports it on held-out classes).
"""
from __future__ import annotations

import numpy as np

__all__ = ["fpr_at_recall", "nearest_neighbour_accuracy", "pair_distances", "recall_at_k", "roc_auc",
           "upper_triangle_pairs"]


def _check_pairs(distance: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distance = np.asarray(distance, dtype=np.float64).ravel()
    is_positive = np.asarray(is_positive).ravel().astype(bool)
    if distance.shape != is_positive.shape:
        raise ValueError(f"distance and is_positive must have the same length. Got: {distance.shape} and "
                         f"{is_positive.shape}")
    if not np.all(np.isfinite(distance)):
        raise ValueError("distance has NaN or infinite values")
    if is_positive.all() or not is_positive.any():
        raise ValueError("need at least one positive and one negative pair")
    return distance, is_positive


def pair_distances(embedding_a: np.ndarray, embedding_b: np.ndarray) -> np.ndarray:
    """Euclidean distance between row i of ``embedding_a`` and row i of ``embedding_b`` (N x D each)."""
    a = np.asarray(embedding_a, dtype=np.float64)
    b = np.asarray(embedding_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must both be N x D. Got: {a.shape} and {b.shape}")
    return np.sqrt(np.sum((a - b) ** 2, axis=1))


def roc_auc(distance: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve of the score ``-distance``: the probability that a random positive pair is
    closer than a random negative one, ties counting one half (Mann-Whitney U over midranks)."""
    distance, is_positive = _check_pairs(distance, is_positive)
    score = -distance
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Midranks: every run of equal scores shares the mean of its 1-based ranks.
    run_starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    run_ends = np.r_[run_starts[1:], len(score)]
    for start, end in zip(run_starts, run_ends):
        ranks[order[start:end]] = 0.5 * (start + 1 + end)
    n_pos = int(is_positive.sum())
    n_neg = len(score) - n_pos
    u_statistic = ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def fpr_at_recall(distance: np.ndarray, is_positive: np.ndarray, recall: float = 0.95) -> float:
    """False positive rate at the smallest distance threshold that accepts ``recall`` of the positive pairs.

    The threshold t is the ceil(recall * P)-th smallest positive distance (P positives); a pair is accepted
    when its distance is <= t, and the result is the fraction of negative pairs accepted. FPR95 is
    ``fpr_at_recall(d, y, 0.95)``: lower is better.
    """
    distance, is_positive = _check_pairs(distance, is_positive)
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1]. Got: {recall}")
    positive_distance = np.sort(distance[is_positive])
    needed = int(np.ceil(recall * len(positive_distance) - 1e-9))
    threshold = positive_distance[max(needed, 1) - 1]
    return float(np.mean(distance[~is_positive] <= threshold))


def nearest_neighbour_accuracy(embedding: np.ndarray, labels: np.ndarray,
                               gallery: np.ndarray | None = None,
                               gallery_labels: np.ndarray | None = None) -> float:
    """Fraction of queries whose nearest neighbour (Euclidean) has the query's label.

    Without a gallery: leave-one-out within ``embedding`` (a row is never its own neighbour). With one:
    queries are the rows of ``embedding``, searched among the rows of ``gallery``. Ties go to the lower index.
    """
    queries = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if queries.ndim != 2 or len(queries) != len(labels):
        raise ValueError(f"embedding must be N x D with N labels. Got: {queries.shape} and {labels.shape}")
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = queries, labels
        if len(queries) < 2:
            raise ValueError("leave-one-out needs at least 2 samples")
    else:
        gallery = np.asarray(gallery, dtype=np.float64)
        gallery_labels = np.asarray(gallery_labels).ravel()
        if gallery.ndim != 2 or gallery.shape[1] != queries.shape[1] or len(gallery) != len(gallery_labels):
            raise ValueError(f"gallery must be M x {queries.shape[1]} with M labels. Got: {gallery.shape} and "
                             f"{np.shape(gallery_labels)}")
    squared = (np.sum(queries ** 2, axis=1)[:, None] + np.sum(gallery ** 2, axis=1)[None, :]
               - 2.0 * queries @ gallery.T)
    if leave_one_out:
        np.fill_diagonal(squared, np.inf)
    nearest = np.argmin(squared, axis=1)
    return float(np.mean(gallery_labels[nearest] == labels))


def recall_at_k(embedding: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 4)) -> dict[int, float]:
    """Recall@k of leave-one-out retrieval: every row queries all the others (Euclidean distance), and counts
    as found when at least one of its k nearest has its label. Returns {k: share of queries found}.

    Ties in distance go to the lower index (a stable sort), so the value is exact and reproducible.
    """
    points = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if points.ndim != 2 or len(points) != len(labels):
        raise ValueError(f"embedding must be N x D with N labels. Got: {points.shape} and {labels.shape}")
    if not ks or min(ks) < 1 or max(ks) > len(points) - 1:
        raise ValueError(f"every k must be in [1, N - 1 = {len(points) - 1}]. Got: {ks}")
    squared = np.concatenate([np.sum((block[:, None, :] - points[None, :, :]) ** 2, axis=2)  # exact differences,
                              for block in np.array_split(points, max(1, len(points) // 64))])  # bounded memory
    np.fill_diagonal(squared, np.inf)  # a query never retrieves itself
    ranked = np.argsort(squared, axis=1, kind="stable")[:, :max(ks)]
    hit = labels[ranked] == labels[:, None]
    return {k: float(np.mean(hit[:, :k].any(axis=1))) for k in ks}


def upper_triangle_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) indices of every unordered pair of n items, first < second."""
    first, second = np.triu_indices(n, k=1)
    return first.astype(np.int64), second.astype(np.int64)
