"""Typed signatures of the compiled module caffe_mining._core_cuda (see _core_cuda.cpp for the argument rules).

Same functions as caffe_mining._core on device arrays (objects with __cuda_array_interface__); the arrays they
return are DeviceArray objects.
"""
from typing import Any, Dict, Optional, Tuple

import numpy as np

class DeviceArray:
    @property
    def __cuda_array_interface__(self) -> Dict[str, Any]: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def device(self) -> int: ...
    @property
    def size(self) -> int: ...
    def get(self) -> np.ndarray: ...
    def __len__(self) -> int: ...

def device_count() -> int: ...
def to_device(host: np.ndarray, device: int = 0) -> DeviceArray: ...
def mining_contrastive_loss(
    feat: Any,
    feat_p: Any,
    sim: Any,
    *,
    margin: float = ...,
    legacy_version: bool = ...,
    mining_ratio: int = ...,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[DeviceArray], Optional[DeviceArray], DeviceArray, DeviceArray]: ...
def hardnet_loss(
    anchor: Any,
    positive: Any,
    labels: Optional[Any] = None,
    *,
    margin: float = ...,
    anchor_swap: bool = ...,
    batch_reduce: str = ...,
    loss_type: str = ...,
    eps: float = ...,
    duplicate_threshold: float = ...,
    uniforms: Optional[Any] = None,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[DeviceArray], Optional[DeviceArray], DeviceArray, DeviceArray, DeviceArray, DeviceArray,
           DeviceArray]: ...
def triplet_loss(
    embedding: Any,
    labels: Any,
    *,
    margin: float = ...,
    soft_margin: bool = ...,
    squared: bool = ...,
    mining: str = ...,
    eps: float = ...,
    loss_weight: float = 1.0,
    backward: bool = True,
    check_finite: bool = True,
) -> Tuple[float, Optional[DeviceArray], DeviceArray, int]: ...
def margin_loss(
    embedding: Any,
    labels: Any,
    beta: Any = None,
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
) -> Tuple[float, Optional[DeviceArray], Optional[DeviceArray], DeviceArray, DeviceArray, DeviceArray, int]: ...
