#!/usr/bin/env bash
# Builds Caffe with our layers (CPU by default; --cuda for the CUDA build) into the cache, and installs the
# caffe_mining Python package into the virtual environment. Installs what is missing first (install-deps.sh:
# seconds when all is there), so it works alone on a fresh machine. Prints nothing new when all is up to date.
#   scripts/build.sh [--cuda] [extra cmake -D options...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

bash "$CAFFE_MINING_REPO/scripts/install-deps.sh"

variant=cpu
cmake_options=()
for arg in "$@"; do
  case "$arg" in
    --cuda) variant=cuda; cmake_options+=(-DWITH_CUDA=ON) ;;
    *) cmake_options+=("$arg") ;;
  esac
done
[ -n "${CAFFE_SOURCE_DIR:-}" ] && cmake_options+=("-DCAFFE_SOURCE_DIR=$CAFFE_SOURCE_DIR")
build_dir="${CAFFE_MINING_BUILD_DIR:-$CAFFE_MINING_CACHE/build-$variant}"
mkdir -p "$CAFFE_MINING_CACHE"

# A build folder made from another clone: forget only the superbuild's own cache (seconds to redo), keep the
# Caffe build inside it, so a fresh clone (CI) rebuilds only what its sources change.
if [ -f "$build_dir/CMakeCache.txt" ] && \
   ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$CAFFE_MINING_REPO" "$build_dir/CMakeCache.txt"; then
  rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
fi
cmake -S "$CAFFE_MINING_REPO" -B "$build_dir" -DPython3_EXECUTABLE="$CAFFE_MINING_PYTHON" \
  -DCAFFE_MINING_CACHE_DIR="$CAFFE_MINING_CACHE" "${cmake_options[@]}" > "$build_dir.configure.log" 2>&1 \
  || { cat "$build_dir.configure.log"; exit 1; }
cmake --build "$build_dir" --parallel "$(nproc)"
if [ "$variant" = cpu ] && [ -f "$CAFFE_MINING_REPO/setup.py" ]; then
  "$CAFFE_MINING_PYTHON" -m pip install -q --no-build-isolation -e "$CAFFE_MINING_REPO"
fi
echo "build: $build_dir"
