#!/usr/bin/env bash
# Installs what building and testing caffe-mining needs on Debian 12, only what is missing:
# Debian packages with apt-get (sudo when not root), Python packages with pip into a virtual environment
# in the cache (Debian's python3, so pycaffe matches the system's libpython and Boost.Python), at the versions
# pinned in scripts/python-constraints.txt (what CI tested; a venv holding other versions is brought to them).
#   scripts/install-deps.sh                         # install what is missing or not at its pin
#   scripts/install-deps.sh --refresh-constraints   # upgrade the Python packages to the newest, re-pin them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

refresh=0
case "${1:-}" in
  --refresh-constraints) refresh=1 ;;
  "") ;;
  *) echo "usage: $0 [--refresh-constraints]" >&2; exit 2 ;;
esac
constraints="$CAFFE_MINING_REPO/scripts/python-constraints.txt"

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
if [ "$refresh" -eq 1 ]; then
  echo "install-deps: pip install --upgrade pip ${python_packages[*]} (unpinned), then re-pin"
  "$CAFFE_MINING_PYTHON" -m pip install -q --upgrade pip "${python_packages[@]}"
  "$CAFFE_MINING_PYTHON" "$CAFFE_MINING_REPO/scripts/python_deps.py" freeze "$constraints"
  echo "install-deps: wrote $constraints; run the tests, then commit it"
  exit 0
fi
stale=$("$CAFFE_MINING_PYTHON" "$CAFFE_MINING_REPO/scripts/python_deps.py" stale "$constraints" pip "${python_packages[@]}")
if [ -n "$stale" ]; then
  echo "install-deps: pip install -c scripts/python-constraints.txt" $stale
  # pip first, alone: the pinned pip then installs the rest.
  "$CAFFE_MINING_PYTHON" -m pip install -q -c "$constraints" pip
  # shellcheck disable=SC2086  # one package name a word
  "$CAFFE_MINING_PYTHON" -m pip install -q -c "$constraints" $stale
fi
echo "install-deps: all present"
