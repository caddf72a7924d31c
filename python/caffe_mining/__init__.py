"""caffe_mining: Caffe loss layers with in-batch mining, from Python (the losses: caffe_mining.losses.LOSSES).

- each loss's functional form (e.g. :func:`mining_contrastive_loss`), options and result class, exported below:
  the C++ core through pybind11 (float32 or float64).
- :mod:`caffe_mining.losses`: one module per loss (options with the proto's defaults, result, functional form,
  spec) and their registry, which the layers and the gradient check read.
- :mod:`caffe_mining.reference`: the same losses in NumPy float64, written from the math (the test oracle).
- :mod:`caffe_mining.layers`: pycaffe Python layers (imports caffe; not imported here).
- :mod:`caffe_mining.gradcheck`: gradient check of a layer against the reference and finite differences
  (``python -m caffe_mining.gradcheck --help``).
"""
from caffe_mining import reference
from caffe_mining.options import parse_param_str
from caffe_mining.sampling import LayerUniforms

# Each loss's exports, one line each: its functional form, options and result.
from caffe_mining.losses.contrastive import ContrastiveOptions, ContrastiveResult, mining_contrastive_loss
from caffe_mining.losses.hardnet import HardNetOptions, HardNetResult, hardnet_loss
from caffe_mining.losses.margin import MarginOptions, MarginResult, margin_loss
from caffe_mining.losses.triplet import TripletOptions, TripletResult, triplet_loss

__version__ = "0.1.0"

# The shared names and every name imported above from a loss module.
__all__ = sorted(["LayerUniforms", "parse_param_str", "reference", *(
    name for name, value in dict(globals()).items()
    if getattr(value, "__module__", "").startswith("caffe_mining.losses.") and not name.startswith("_"))])
