"""What the mutants share: the :class:`Mutant`, the test files every core change may break (tried first, in this
order: quick, targeted files first, as pytest -x stops at the first failure) and the shared kill_first groups."""
from dataclasses import dataclass, field
from typing import Optional, Tuple

__all__ = ["BOUNDARIES", "DESELECTED", "GPU_LOGIC", "Mutant", "TEST_FILES"]

# The core's Caffe-free tests that are no loss's own (each loss's module adds its own TEST_FILES after these). Tests
# that need pycaffe skip here (CAFFE_MINING_REQUIRE_CAFFE is cleared for the mutants' runs).
TEST_FILES = (
    "tests/test_core_boundaries.py",
    "tests/test_gpu_logic_on_host.py",
    "tests/test_bad_input.py",
    "tests/test_reference.py",
    "tests/test_bindings.py",
    "tests/test_gradcheck.py",
    "tests/test_cpu_lanes.py",
)
DESELECTED = {
    "tests/test_gradcheck.py::test_cli_without_pycaffe_says_so":
        "replaces PYTHONPATH, so it imports the installed caffe_mining instead of the mutated copy",
}


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    anchor: str       # exact text, exactly once in `file`
    replacement: str
    rule: str         # the header's rule this breaks
    ci: bool = False  # in the fixed subset that CI runs (scripts/test.sh through CTest)
    equivalent: Optional[str] = None  # why no test can tell it from the original; such a survivor passes
    kill_first: Tuple[str, ...] = field(default=())  # test files tried before the rest (speed only)


BOUNDARIES = ("tests/test_core_boundaries.py",)
GPU_LOGIC = ("tests/test_gpu_logic_on_host.py",)
