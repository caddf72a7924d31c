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
