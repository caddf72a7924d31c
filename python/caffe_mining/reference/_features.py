"""What every reference function does with its inputs first: features as float64 (N, D)."""
from __future__ import annotations

import numpy as np

__all__ = ["as_2d_features"]



def as_2d_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and x.shape[2:] == (1, 1):  # Caffe's N x D x 1 x 1 blobs
        x = x.reshape(x.shape[0], x.shape[1])
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D) or (N, D, 1, 1). Got: {x.shape}")
    return x
