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
def contrastive_options_problem(*, margin: float = ..., mining_ratio: int = ..., dtype: str = "float64") -> str: ...
