#!/usr/bin/env bash
# The test command: builds Caffe with our layers (CPU; build.sh installs what is missing first) and runs every test
# (the layers' gtests and the Python suite) with CTest. Where nvcc exists it also compiles and links the
# CUDA build, packs what the GPU machine's check needs (device_payload/) and checks that package and its size
# (scripts/device_check.sh --check), and where a GPU answers it runs the gtests on it too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash "$CAFFE_MINING_REPO/scripts/build.sh"
use_tuned_openblas_kernel
ctest --test-dir "${CAFFE_MINING_BUILD_DIR:-$CAFFE_MINING_CACHE/build-cpu}" --verbose

if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  CAFFE_MINING_BUILD_DIR="$CAFFE_MINING_CACHE/build-cuda" bash "$CAFFE_MINING_REPO/scripts/build.sh" --cuda
  "$CAFFE_MINING_PYTHON" "$CAFFE_MINING_REPO/scripts/package_device.py"
  CAFFE_MINING_PYTHON="$CAFFE_MINING_PYTHON" bash "$CAFFE_MINING_REPO/scripts/device_check.sh" --check
  if nvidia-smi -L >/dev/null 2>&1; then
    ctest --test-dir "$CAFFE_MINING_CACHE/build-cuda" --output-on-failure -R caffe_layer_gtests
  else
    echo "test: CUDA build compiled and linked; no GPU here, so its gtests did not run"
  fi
fi
