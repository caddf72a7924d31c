"""Type checks of option fields, shared by the losses' options classes (the ranges are the core's checks).

Every message names the field and the bad value ("... Got: ...").
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "proto_decimal", "raise_if"]


def raise_if(problem: str) -> None:
    """Raises the core's answer to ``*_options_problem`` ("" when the options are fine)."""
    if problem:
        raise ValueError(problem)


def check_number(key: str, value: Any) -> None:
    """The type only; the range (finite included) is the core's check."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number. Got: {value!r}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false. Got: {value!r}")


def check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer. Got: {value!r}")


def check_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    """An enum field by name, any case; returns the name in capitals."""
    if not isinstance(value, str) or value.upper() not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}. Got: {value!r}")
    return value.upper()


def proto_decimal(value: float) -> float:
    """A proto float (float32) as the decimal it was written as (0.7, not 0.699999988079071)."""
    return float(f"{value:.7g}")
