"""Typed signatures of the compiled module caffe_mining._core (see _core.cpp for the argument rules).

The options' defaults (``= ...``) are the proto's, as caffe_mining.losses' options classes state them.
"""
from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

def mining_contrastive_loss(
    feat: npt.ArrayLike,
    feat_p: npt.ArrayLike,
    sim: npt.ArrayLike,
    *,
    margin: float = ...,
    legacy_version: bool = ...,
    mining_ratio: int = ...,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray]: ...
def hardnet_loss(
    anchor: npt.ArrayLike,
    positive: npt.ArrayLike,
    labels: Optional[npt.ArrayLike] = None,
    *,
    margin: float = ...,
    anchor_swap: bool = ...,
    batch_reduce: str = ...,
    loss_type: str = ...,
    eps: float = ...,
    duplicate_threshold: float = ...,
    uniforms: Optional[npt.ArrayLike] = None,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
           np.ndarray]: ...
def hardnet_cpu_lanes() -> int: ...
def hardnet_options_problem(
    *,
    margin: float = ...,
    anchor_swap: bool = ...,
    batch_reduce: str = ...,
    loss_type: str = ...,
    eps: float = ...,
    duplicate_threshold: float = ...,
    dtype: str = "float64",
) -> str: ...
def contrastive_options_problem(*, margin: float = ..., mining_ratio: int = ..., dtype: str = "float64") -> str: ...
def triplet_loss(
    embedding: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    margin: float = ...,
    soft_margin: bool = ...,
    squared: bool = ...,
    mining: str = ...,
    eps: float = ...,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], np.ndarray, int]: ...
def triplet_options_problem(
    *,
    margin: float = ...,
    soft_margin: bool = ...,
    squared: bool = ...,
    mining: str = ...,
    eps: float = ...,
    dtype: str = "float64",
) -> str: ...
def margin_loss(
    embedding: npt.ArrayLike,
    labels: npt.ArrayLike,
    beta: Optional[npt.ArrayLike] = None,
    *,
    margin: float = ...,
    beta_init: float = ...,
    nu: float = ...,
    num_classes: int = ...,
    negatives_per_positive: int = ...,
    sampler: str = ...,
    cutoff: float = ...,
    nonzero_loss_cutoff: float = ...,
    eps: float = ...,
    seed: int = ...,
    iteration: int = 0,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray, np.ndarray, int]: ...
def margin_options_problem(
    *,
    margin: float = ...,
    beta_init: float = ...,
    nu: float = ...,
    num_classes: int = ...,
    negatives_per_positive: int = ...,
    sampler: str = ...,
    cutoff: float = ...,
    nonzero_loss_cutoff: float = ...,
    eps: float = ...,
    seed: int = ...,
    dtype: str = "float64",
) -> str: ...
