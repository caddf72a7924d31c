"""NumPy reference of the losses, written from the math (float64, vectorised).

This package is the independent oracle the C++ core, the bindings and the Caffe layers are checked against:
it shares no code with them.  Each function returns the loss, the exact gradient of that loss with respect to
every float input, and the mining decisions, as its loss's result class (caffe_mining.losses.<loss>).

One module per loss (``caffe_mining.reference.<loss>``); every name a module exports is also
``caffe_mining.reference.<name>``, the name the specs and the tests use.
"""
from __future__ import annotations

import importlib
import pkgutil

__all__ = []

for _module in pkgutil.iter_modules(__path__):  # sorted by name: each loss's module (not the shared _features)
    if _module.name.startswith("_"):
        continue
    _loaded = importlib.import_module(f"{__name__}.{_module.name}")
    globals().update({_name: getattr(_loaded, _name) for _name in _loaded.__all__})
    __all__ += _loaded.__all__
__all__.sort()
del _module, _loaded
