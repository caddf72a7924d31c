"""Typed signatures of the compiled module caffe_mining._core (see _core.cpp for the argument rules)."""
from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

def mining_contrastive_loss(
    feat: npt.ArrayLike,
    feat_p: npt.ArrayLike,
    sim: npt.ArrayLike,
    *,
    margin: float = 1.0,
    legacy_version: bool = False,
    mining_ratio: int = 1,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray]: ...
def hardnet_loss(
    anchor: npt.ArrayLike,
    positive: npt.ArrayLike,
    labels: Optional[npt.ArrayLike] = None,
    *,
    margin: float = 1.0,
    anchor_swap: bool = False,
    batch_reduce: str = "MIN",
    loss_type: str = "TRIPLET_MARGIN",
    eps: float = 1e-6,
    duplicate_threshold: float = 0.008,
    uniforms: Optional[npt.ArrayLike] = None,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
           np.ndarray]: ...
def hardnet_options_problem(
    *,
    margin: float = 1.0,
    anchor_swap: bool = False,
    batch_reduce: str = "MIN",
    loss_type: str = "TRIPLET_MARGIN",
    eps: float = 1e-6,
    duplicate_threshold: float = 0.008,
    dtype: str = "float64",
) -> str: ...
def contrastive_options_problem(*, margin: float = 1.0, mining_ratio: int = 1, dtype: str = "float64") -> str: ...
