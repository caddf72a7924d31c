"""Speed and memory of caffe-mining's loss layers against the physical floor and the alternatives.

Run ``python -m benchmarks --help`` from the repository root (README.md in this folder shows the latest results).
This module imports nothing heavy: ``python -m benchmarks`` sets the BLAS thread count before NumPy loads.
"""
