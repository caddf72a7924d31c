"""Shared fixtures and hooks of the Python tests.

GPU tests (marker ``gpu``, in tests/gpu/) run only where caffe_mining._core_cuda is built and a GPU answers.
Elsewhere they are skipped, never passed, and the summary says so on its own line ("N GPU tests did not run:
why"); with CAFFE_MINING_REQUIRE_GPU=1 (set by scripts/device_check.sh) they fail instead.

pycaffe comes from PYTHONPATH (the superbuild's <build>/caffe-src/python). Tests that need it use the ``caffe``
or ``caffe_with_layers`` fixture: without pycaffe they are skipped for convenience on a developer machine, but
with CAFFE_MINING_REQUIRE_CAFFE=1 (set by CTest and CI) they fail instead, so CI never passes by skipping.
"""
import importlib
import os
import zlib

import numpy as np
import pytest

# Quiet Caffe's glog INFO lines (net set-up is logged at length); must be set before caffe is imported.
os.environ.setdefault("GLOG_minloglevel", "2")

REQUIRE_CAFFE = os.environ.get("CAFFE_MINING_REQUIRE_CAFFE") == "1"
REQUIRE_GPU = os.environ.get("CAFFE_MINING_REQUIRE_GPU") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs the CUDA core on a GPU (skipped and counted where none answers)")
    config.addinivalue_line("markers", "memcheck: small GPU tests that scripts/device_check.sh reruns under "
                                       "compute-sanitizer --tool memcheck")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from caffe_mining import device
    reason = device.unavailable_reason()
    if reason is None:
        return
    config.stash[_GPU_NOT_RUN] = (len(gpu_items), reason)
    if not REQUIRE_GPU:  # (with it, pytest_runtest_setup fails each one instead)
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"GPU test did not run: {reason}"))


_GPU_NOT_RUN = pytest.StashKey()


def pytest_runtest_setup(item):
    not_run = item.config.stash.get(_GPU_NOT_RUN, None)
    if REQUIRE_GPU and not_run and item.get_closest_marker("gpu"):
        pytest.fail(f"CAFFE_MINING_REQUIRE_GPU=1 but the GPU tests cannot run: {not_run[1]}", pytrace=False)


def pytest_terminal_summary(terminalreporter, config):
    not_run = config.stash.get(_GPU_NOT_RUN, None)
    if not_run and not REQUIRE_GPU:
        count, reason = not_run
        terminalreporter.write_line(f"{count} GPU tests did not run (skipped, not passed): {reason}",
                                    yellow=True, bold=True)


def _unavailable(reason: str):
    if REQUIRE_CAFFE:
        pytest.fail(f"{reason} (CAFFE_MINING_REQUIRE_CAFFE=1: pycaffe tests must run)", pytrace=False)
    pytest.skip(f"{reason}; set PYTHONPATH to a pycaffe (CAFFE_MINING_REQUIRE_CAFFE=1 makes this a failure)")


@pytest.fixture(scope="session")
def caffe():
    """pycaffe, or skip (fail under CAFFE_MINING_REQUIRE_CAFFE=1)."""
    try:
        return importlib.import_module("caffe")
    except ImportError as error:
        _unavailable(f"cannot import pycaffe: {error}")


@pytest.fixture(scope="session")
def caffe_with_layers(caffe):
    """pycaffe built with caffe-mining's C++ layers (every loss of the registry, caffe_mining.losses.LOSSES)."""
    from caffe_mining.examples.caffe_run import OUR_LAYERS

    missing = set(OUR_LAYERS) - set(caffe.layer_type_list())
    if missing:
        _unavailable(f"pycaffe at {os.path.dirname(caffe.__file__)} lacks the layers {sorted(missing)}")
    return caffe


@pytest.fixture(scope="session")
def caffe_bin():
    """The `caffe` tool of the build (CAFFE_MINING_CAFFE_BIN, set by CTest), or skip (fail under
    CAFFE_MINING_REQUIRE_CAFFE=1)."""
    path = os.environ.get("CAFFE_MINING_CAFFE_BIN", "")
    if not os.access(path, os.X_OK):
        _unavailable(f"no caffe binary at CAFFE_MINING_CAFFE_BIN={path!r}")
    return path


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
