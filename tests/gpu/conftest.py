"""GPU tests: every test here carries the ``gpu`` marker (tests/conftest.py skips and counts them where no GPU
answers). CAFFE_MINING_GPU_STANDIN=cpu|planted swaps caffe_mining._core_cuda for cpu_standin (see there)."""
import os
import sys

if os.environ.get("CAFFE_MINING_GPU_STANDIN"):
    sys.path.insert(0, os.path.dirname(__file__))
    import cpu_standin

    sys.modules["caffe_mining._core_cuda"] = cpu_standin
    import caffe_mining

    caffe_mining._core_cuda = cpu_standin
