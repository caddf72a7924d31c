"""scripts/sanitize.py's fuzz harness (CTest's `sanitizers` runs it on the sanitized build): a case whose process
crashes is a failure, a Python exception is a pass, and a fuzz whose valid cases all fail is a failure too. Run here
on stand-in bindings, without the sanitizers, so it takes seconds."""
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("sanitize", os.path.join(REPO, "scripts", "sanitize.py"))
sanitize = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sanitize)

CRASHES = "import ctypes\n\ndef {name}(*args, **kwargs):\n    ctypes.string_at(0)  # a segfault, as an overrun would\n"
RAISES = "def {name}(*args, **kwargs):\n    raise ValueError('a check of the bindings')\n"
RETURNS = "def {name}(*args, **kwargs):\n    return (0.5, None, None)\n"


def stand_in(tmp_path, contrastive, hardnet):
    package = tmp_path / "caffe_mining"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_core.py").write_text(contrastive.format(name="mining_contrastive_loss") + "\n" +
                                      hardnet.format(name="hardnet_loss") + "\n" +
                                      hardnet.format(name="triplet_loss"))  # the odd cases: HardNet, Triplet
    return str(tmp_path), dict(os.environ, PYTHONPATH=str(tmp_path))


def test_a_crashing_case_is_a_failure(tmp_path):
    lib, env = stand_in(tmp_path, CRASHES, RETURNS)
    failures = sanitize.fuzz(env, seed=0, cases=6, jobs=2, lib=lib)
    crashed = sorted(int(f.split()[1]) for f in failures if "exit -11" in f)
    assert crashed == [0, 2, 4]  # the even cases call mining_contrastive_loss
    assert len(failures) == 3


def test_exceptions_pass_but_a_fuzz_of_only_exceptions_fails(tmp_path):
    lib, env = stand_in(tmp_path, RAISES, RETURNS)
    assert sanitize.fuzz(env, seed=0, cases=6, jobs=2, lib=lib) == []
    lib, env = stand_in(tmp_path / "all", RAISES, RAISES)
    failures = sanitize.fuzz(env, seed=0, cases=6, jobs=2, lib=lib)
    assert len(failures) == 1 and "valid cases returned a result" in failures[0]


def test_a_sanitizer_report_is_a_failure_even_with_exit_0():
    assert sanitize.has_report("==1==ERROR: AddressSanitizer: heap-buffer-overflow on address")
    assert sanitize.has_report("hardnet.cpp:12:5: runtime error: signed integer overflow")
    assert not sanitize.has_report("ValueError: N must be >= 2")


@pytest.mark.parametrize("index", range(12))
def test_cases_are_drawn_alike_in_parent_and_child(index):
    import numpy as np
    first, second = sanitize.draw_case(3, index), sanitize.draw_case(3, index)
    assert first[0] == second[0] and first[3] == second[3]
    for a, b in zip(first[1], second[1]):
        assert (a is None and b is None) or isinstance(a, str) or np.array_equal(np.asarray(a), np.asarray(b),
                                                                                    equal_nan=True)
