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
