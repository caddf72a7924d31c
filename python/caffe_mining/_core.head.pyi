# Head of caffe_mining/_core.pyi: setup.py's build_ext writes this, then bindings/<loss>.pyi by name.
"""Typed signatures of the compiled module caffe_mining._core (see _core.cpp for the argument rules).

The options' defaults (``= ...``) are the proto's, as caffe_mining.losses' options classes state them.
"""
from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

