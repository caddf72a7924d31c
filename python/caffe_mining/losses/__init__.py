"""The losses, one module each (options, result, functional form, spec), and their registry.

A new loss adds its module here and one line to :data:`LOSSES` (see docs/adding-a-loss.md).
"""
from __future__ import annotations

from typing import Dict

from caffe_mining.losses import contrastive, hardnet
from caffe_mining.losses.spec import LossSpec

__all__ = ["LOSSES", "LossSpec"]

#: Caffe layer type -> its spec; the gradient check, the pycaffe layers and the tests iterate over it.
LOSSES: Dict[str, LossSpec] = {spec.type_name: spec for spec in (contrastive.SPEC, hardnet.SPEC)}

