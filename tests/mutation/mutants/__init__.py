"""The mutants: one realistic bug each, planted by replacing an exact snippet of the core (which must occur exactly
once in its file; otherwise the mutant is an ERROR, never a pass) and named after the rule of the layer headers it
breaks. Re-anchoring after a change of the core: update `anchor` (and `replacement`) to the new text, keep `id`.

One module per loss (<loss>.py: its mutants, one per rule its header states, and the test files of its own);
mutant.py holds the Mutant class and what they share. A new loss, miner, reducer or
fast path adds its own mutants in its own module here, found by name (sorted).
"""
import importlib
import pkgutil

from .mutant import DESELECTED, TEST_FILES as _SHARED_TEST_FILES, Mutant

__all__ = ["DESELECTED", "MUTANTS", "Mutant", "TEST_FILES"]

_MODULES = [importlib.import_module(f"{__name__}.{module.name}") for module in pkgutil.iter_modules(__path__)
            if module.name != "mutant"]
MUTANTS = tuple(mutant for module in _MODULES for mutant in module.MUTANTS)
# The core's Caffe-free tests, in the order they are tried: the shared ones, then each module's own.
TEST_FILES = _SHARED_TEST_FILES + tuple(path for module in _MODULES for path in getattr(module, "TEST_FILES", ()))
