"""`python -m benchmarks setup-torch`: installs torch from PyPI into a folder of its own for the comparison.

torch is not a dependency of caffe-mining: it goes to $CAFFE_MINING_CACHE/bench-torch (default
~/.cache/caffe-mining/bench-torch), which only the benchmark adds to sys.path (after the environment's own
packages). PyPI's Linux wheel brings its CUDA libraries as dependencies (about 4 GB installed); the CPU-only
wheels live on another index, which this project does not use.
"""
from __future__ import annotations

import subprocess
import sys

from benchmarks.hardnet_torch import torch_site


def install() -> int:
    target = torch_site()
    command = [sys.executable, "-m", "pip", "install", "--upgrade", "--target", str(target), "torch"]
    print(" ".join(command), flush=True)
    return subprocess.call(command)
