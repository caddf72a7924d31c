"""Parsing the losses' options: a Python layer's param_str and the CLI's ``--param k=v``.

Each loss's options class (names, defaults, validation) lives in its module (:mod:`caffe_mining.losses`), with the
names and defaults of caffe.proto (``contrastive_loss_param`` with our ``mining_ratio``, ``hardnet_loss_param``),
so that a Python layer's ``param_str`` reads like the C++ layer's proto text. Every error names the bad key and
value.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any, Iterable, Mapping

from caffe_mining.losses import LOSSES
from caffe_mining.losses.contrastive import ContrastiveOptions
from caffe_mining.losses.hardnet import BATCH_REDUCES, LOSS_TYPES, HardNetOptions
from caffe_mining.losses.triplet import TripletOptions

__all__ = [
    "BATCH_REDUCES",
    "LOSS_TYPES",
    "ContrastiveOptions",
    "HardNetOptions",
    "TripletOptions",
    "LAYER_OPTIONS",
    "options_from_mapping",
    "parse_param_str",
    "parse_key_values",
]

#: Layer type name -> its options class.
LAYER_OPTIONS = {type_name: spec.options_class for type_name, spec in LOSSES.items()}

Options = Any  # an instance of a registered loss's options class


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
