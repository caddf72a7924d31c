"""Parameters of both losses: defaults, validation and parsing (param_str, ``--param k=v``).

The names and defaults are those of caffe.proto (``contrastive_loss_param`` with our ``mining_ratio``, and
``hardnet_loss_param``), so that a Python layer's ``param_str`` reads like the C++ layer's proto text.
Every error names the bad key and value.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any, Iterable, Mapping, Optional, Union

from caffe_mining import _core

__all__ = [
    "BATCH_REDUCES",
    "LOSS_TYPES",
    "ContrastiveOptions",
    "HardNetOptions",
    "LAYER_OPTIONS",
    "options_from_mapping",
    "parse_param_str",
    "parse_key_values",
]

#: batch_reduce values, in the order of HardNetLossParameter.BatchReduce (the index is the proto enum value).
BATCH_REDUCES = ("MIN", "AVERAGE", "RANDOM")
#: loss_type values, in the order of HardNetLossParameter.LossType.
LOSS_TYPES = ("TRIPLET_MARGIN", "SOFTMAX", "CONTRASTIVE")


@dataclasses.dataclass(frozen=True)
class ContrastiveOptions:
    """contrastive_loss_param of MiningContrastiveLoss."""

    margin: float = 1.0
    legacy_version: bool = False
    mining_ratio: int = 1

    def __post_init__(self) -> None:
        _check_number("margin", self.margin)
        _check_bool("legacy_version", self.legacy_version)
        _check_int("mining_ratio", self.mining_ratio)
        _raise_if(_core.contrastive_options_problem(margin=self.margin, mining_ratio=self.mining_ratio))

    def proto_text(self) -> str:
        """The ``contrastive_loss_param { ... }`` block of a prototxt."""
        return (f"contrastive_loss_param {{ margin: {self.margin!r} "
                f"legacy_version: {str(self.legacy_version).lower()} mining_ratio: {self.mining_ratio} }}")


@dataclasses.dataclass(frozen=True)
class HardNetOptions:
    """hardnet_loss_param of HardNetLoss. ``seed`` None: RANDOM draws from an unseeded generator."""

    margin: float = 1.0
    anchor_swap: bool = False
    batch_reduce: str = "MIN"
    loss_type: str = "TRIPLET_MARGIN"
    eps: float = 1e-6
    duplicate_threshold: float = 0.008
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        for key in ("margin", "eps", "duplicate_threshold"):
            _check_number(key, getattr(self, key))
        _check_bool("anchor_swap", self.anchor_swap)
        for key, allowed in (("batch_reduce", BATCH_REDUCES), ("loss_type", LOSS_TYPES)):
            value = getattr(self, key)
            if not isinstance(value, str) or value.upper() not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}. Got: {value!r}")
            object.__setattr__(self, key, value.upper())
        # The ranges: the core's check, the one the C++ layer and the bindings make (float32 at call time).
        _raise_if(_core.hardnet_options_problem(
            margin=self.margin, anchor_swap=self.anchor_swap, batch_reduce=self.batch_reduce,
            loss_type=self.loss_type, eps=self.eps, duplicate_threshold=self.duplicate_threshold))
        if self.seed is not None:
            _check_int("seed", self.seed)
            if not 0 <= self.seed < 2**32:
                raise ValueError(f"seed must be in [0, 2^32). Got: {self.seed}")

    def proto_text(self) -> str:
        """The ``hardnet_loss_param { ... }`` block of a prototxt."""
        fields = [f"margin: {self.margin!r}", f"anchor_swap: {str(self.anchor_swap).lower()}",
                  f"batch_reduce: {self.batch_reduce}", f"loss_type: {self.loss_type}", f"eps: {self.eps!r}",
                  f"duplicate_threshold: {self.duplicate_threshold!r}"]
        if self.seed is not None:
            fields.append(f"seed: {self.seed}")
        return "hardnet_loss_param { " + " ".join(fields) + " }"


#: Layer type name -> its options class.
LAYER_OPTIONS = {"MiningContrastiveLoss": ContrastiveOptions, "HardNetLoss": HardNetOptions}

Options = Union[ContrastiveOptions, HardNetOptions]


def _raise_if(problem: str) -> None:
    if problem:
        raise ValueError(problem)


def _check_number(key: str, value: Any) -> None:
    """The type only; the range (finite included) is the core's check."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number. Got: {value!r}")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false. Got: {value!r}")


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer. Got: {value!r}")


def options_from_mapping(options_class: type, mapping: Mapping[str, Any]) -> Options:
    """Builds ``options_class`` from a mapping, refusing unknown keys with the list of known ones."""
    known = [field.name for field in dataclasses.fields(options_class)]
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for {options_class.__name__}; "
                         f"known: {', '.join(known)}")
    return options_class(**dict(mapping))


def parse_param_str(param_str: str, options_class: type) -> Options:
    """Options from a Python layer's ``param_str``: a JSON object or a Python dict literal (empty = defaults).

    >>> parse_param_str('{"mining_ratio": 4}', ContrastiveOptions).mining_ratio
    4
    >>> parse_param_str("{'batch_reduce': 'AVERAGE', 'anchor_swap': True}", HardNetOptions).batch_reduce
    'AVERAGE'
    """
    text = (param_str or "").strip()
    if not text:
        return options_class()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError:
        try:
            mapping = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"param_str must be a JSON object or a Python dict literal. Got: {text!r} "
                             f"({error})") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"param_str must be a JSON object or a Python dict literal. Got: {text!r}")
    return options_from_mapping(options_class, mapping)


def _parse_scalar(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_key_values(pairs: Iterable[str], options_class: type) -> Options:
    """Options from ``key=value`` strings (the CLI's repeatable ``--param``); values parse as bool, int, float or
    a bare word (``batch_reduce=AVERAGE``)."""
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameters are key=value. Got: {pair!r}")
        mapping[key.strip()] = _parse_scalar(value)
    return options_from_mapping(options_class, mapping)
