#!/usr/bin/env bash
# Installs what building and testing caffe-mining needs on Debian 12, only what is missing:
# Debian packages with apt-get (sudo when not root), Python packages with pip into a virtual environment
# in the cache (Debian's python3, so pycaffe matches the system's libpython and Boost.Python).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

debian_packages=(
  build-essential cmake git dpkg-dev patch ca-certificates ccache
  libboost-system-dev libboost-filesystem-dev libboost-thread-dev libboost-python-dev
  libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler
  libhdf5-dev liblmdb-dev libleveldb-dev libsnappy-dev libopenblas-dev
  pybind11-dev python3 python3-dev python3-venv
)
python_packages=(numpy protobuf six scikit-image pybind11 setuptools wheel pytest hypothesis matplotlib h5py scikit-learn)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$CAFFE_MINING_PYTHON" ]; then
  echo "install-deps: creating $CAFFE_MINING_VENV"
  /usr/bin/python3 -m venv "$CAFFE_MINING_VENV"
fi
"$CAFFE_MINING_PYTHON" - "${python_packages[@]}" <<'PY' || {
import importlib.util, sys
modules = {"protobuf": "google.protobuf", "scikit-image": "skimage", "scikit-learn": "sklearn"}
sys.exit(any(importlib.util.find_spec(modules.get(p, p)) is None for p in sys.argv[1:]))
PY
  echo "install-deps: pip install ${python_packages[*]}"
  "$CAFFE_MINING_PYTHON" -m pip install -q --upgrade pip
  "$CAFFE_MINING_PYTHON" -m pip install -q "${python_packages[@]}"
}
echo "install-deps: all present"
