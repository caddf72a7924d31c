"""What a loss evaluation returns, shared by the NumPy reference and the bindings so they compare field by field.

Each result type lives in its loss's module (:mod:`caffe_mining.losses`); this module gathers them.
"""
from caffe_mining.losses.contrastive import ContrastiveResult
from caffe_mining.losses.hardnet import HardNetResult
from caffe_mining.losses.triplet import TripletResult

__all__ = ["ContrastiveResult", "HardNetResult", "TripletResult"]
