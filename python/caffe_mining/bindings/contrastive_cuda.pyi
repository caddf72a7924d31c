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
