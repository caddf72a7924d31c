"""Benchmark inputs: float32 batches shaped like real training batches, so every branch of the losses does work."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hardnet_batch(n: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Anchors and positives of unit length, as HardNet's descriptors are.

    Positive i is anchor i plus noise (distance about 0.6), while random unit vectors in 128 dimensions lie about
    1.2 to 1.4 apart, so with margin 1 nearly every row's hinge is active and the backward pass does its full work.
    """
    rng = np.random.default_rng(seed)
    anchor = _unit_rows(rng.standard_normal((n, dim)))
    positive = _unit_rows(anchor + 0.06 * rng.standard_normal((n, dim)))
    return anchor.astype(np.float32), positive.astype(np.float32)


def contrastive_batch(n: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (feat, feat_p) with distances spread over [0, 1.5] around the margin 1, half of them similar.

    Spread costs make the mining choose (no large block of equal zero costs), and both hinge sides occur.
    """
    rng = np.random.default_rng(seed)
    feat = rng.standard_normal((n, dim)) / np.sqrt(dim)
    direction = _unit_rows(rng.standard_normal((n, dim)))
    distance = rng.uniform(0.0, 1.5, size=(n, 1))
    feat_p = feat + distance * direction
    sim = (rng.random(n) < 0.5).astype(np.float32)
    return feat.astype(np.float32), feat_p.astype(np.float32), sim
