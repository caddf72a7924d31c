"""P x K batches written in file order, for a data layer that does not shuffle (Caffe's ``HDF5Data``).

Metric-learning losses that mine inside the batch (triplet, margin) need batches of P classes with K samples
each ("Sampling Matters", Hermans et al.). Caffe's data layers read rows in order, so the order is made here:
consecutive chunks of P * K rows are the batches.

Per epoch, every class's samples are shuffled and cut into groups of K (a class's last n_c mod K samples sit
the epoch out); batches take one group from each of P classes drawn at random among the classes that still
have a group, until fewer than P do. So each epoch's batches are in a new random order and a sample appears
at most once an epoch.

Inside a batch the rows are ordered for the pair losses (Caffe's ``ContrastiveLoss`` takes two feature blobs
of pairs): a ``Slice`` of the batch into halves pairs row i with row i + PK/2. Of each class's K samples, K/2
go to each half; K/4 of its pairs are same-class, the others are paired with a sample of another class; so
exactly half of the PK/2 pairs are similar. Losses that see the batch as a set (triplet, margin) do not care
about the order.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pair_halves", "pk_batch_order"]


def _check_pk(labels: np.ndarray, classes_per_batch: int, samples_per_class: int) -> None:
    n_classes = len(np.unique(labels))
    if classes_per_batch < 2 or classes_per_batch > n_classes:
        raise ValueError(f"classes_per_batch must be in [2, {n_classes}] (the classes present). "
                         f"Got: {classes_per_batch}")
    if samples_per_class < 4 or samples_per_class % 4:
        raise ValueError("samples_per_class must be a positive multiple of 4 (each half of the batch holds "
                         f"K/2 of a class, K/4 of them in same-class pairs). Got: {samples_per_class}")


def pair_halves(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The P * K row order of one batch from P groups of K sample indices (one class each).

    Returns ``order`` with pairs (order[i], order[i + PK/2]): each class gives K/4 same-class pairs; its other
    K/4 first-half samples meet second-half samples of another class (a cyclic shift of the class blocks by a
    random 1..P-1 classes); the PK/2 pairs are then put in random order.
    """
    n_classes, k = len(groups), len(groups[0])
    quarter = k // 4
    first = [g[:k // 2] for g in groups]
    second = [g[k // 2:] for g in groups]
    same_a = np.concatenate([f[:quarter] for f in first])
    same_b = np.concatenate([s[:quarter] for s in second])
    cross_a = np.concatenate([f[quarter:] for f in first])   # class blocks of `quarter` entries
    cross_b = np.concatenate([s[quarter:] for s in second])
    shift = quarter * int(rng.integers(1, n_classes))         # whole blocks: never the same class
    cross_b = np.roll(cross_b, -shift)
    side_a = np.concatenate([same_a, cross_a])
    side_b = np.concatenate([same_b, cross_b])
    order = rng.permutation(len(side_a))
    return np.concatenate([side_a[order], side_b[order]])


def pk_batch_order(labels: np.ndarray, classes_per_batch: int, samples_per_class: int, n_epochs: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Sample indices in file order: ``n_epochs`` epochs of P x K batches (P = classes_per_batch,
    K = samples_per_class), each batch's rows ordered by :func:`pair_halves`. The length is a multiple of
    P * K."""
    labels = np.asarray(labels).ravel()
    _check_pk(labels, classes_per_batch, samples_per_class)
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1. Got: {n_epochs}")
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    if min(len(m) for m in members.values()) < samples_per_class:
        raise ValueError(f"every class needs at least samples_per_class = {samples_per_class} samples. Got: "
                         f"{ {int(c): len(m) for c, m in members.items()} }")
    batches = []
    for _ in range(n_epochs):
        groups = {c: list(np.split(rng.permutation(m)[:len(m) // samples_per_class * samples_per_class],
                                   len(m) // samples_per_class)) for c, m in members.items()}
        while sum(1 for c in classes if groups[c]) >= classes_per_batch:
            available = np.array([c for c in classes if groups[c]])
            chosen = rng.choice(available, size=classes_per_batch, replace=False)
            batches.append(pair_halves([groups[c].pop() for c in chosen], rng))
    return np.concatenate(batches)
