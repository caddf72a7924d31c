"""Shared fixtures of the Python tests.

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
    """pycaffe built with caffe-mining's C++ layers (MiningContrastiveLoss, HardNetLoss)."""
    missing = {"MiningContrastiveLoss", "HardNetLoss"} - set(caffe.layer_type_list())
    if missing:
        _unavailable(f"pycaffe at {os.path.dirname(caffe.__file__)} lacks the layers {sorted(missing)}")
    return caffe


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
