"""The losses, one module each (options, result, functional form, spec), and their registry.

A new loss adds its module here and one line to :data:`LOSSES` (see docs/adding-a-loss.md).
"""
from __future__ import annotations

from typing import Dict

from caffe_mining.losses import contrastive, hardnet
from caffe_mining.losses.spec import LossSpec

__all__ = ["LOSSES", "LossSpec", "spec_of_options"]

#: Caffe layer type -> its spec; the gradient check, the pycaffe layers and the tests iterate over it.
LOSSES: Dict[str, LossSpec] = {spec.type_name: spec for spec in (contrastive.SPEC, hardnet.SPEC)}


def spec_of_options(options_class: type) -> LossSpec:
    """The spec of the loss whose options are ``options_class``."""
    for spec in LOSSES.values():
        if spec.options_class is options_class:
            return spec
    raise ValueError(f"{options_class.__name__} is not the options class of a registered loss")
