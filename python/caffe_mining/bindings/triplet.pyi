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
