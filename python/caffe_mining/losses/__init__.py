"""The losses, one module each (options, result, functional form, spec), and their registry.

A new loss adds its module here and its name to :data:`_MODULES` (see docs/adding-a-loss.md).
"""
from __future__ import annotations

import importlib
from typing import Dict

from caffe_mining.losses.spec import LossSpec

__all__ = ["LOSSES", "LossSpec"]

#: The loss modules, one line each, in the order the CLI and the tests list them.
_MODULES = (
    "contrastive",
    "hardnet",
    "margin",
    "triplet",
)

#: Caffe layer type -> its spec (each module's SPEC); the gradient check, the pycaffe layers and the tests read it.
LOSSES: Dict[str, LossSpec] = {
    spec.type_name: spec for spec in (importlib.import_module(f"{__name__}.{name}").SPEC for name in _MODULES)}

