# Paths shared by the scripts (sourced, not run). Everything built or downloaded lives outside the clone.
CAFFE_MINING_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CAFFE_MINING_CACHE="${CAFFE_MINING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-mining}"
CAFFE_MINING_VENV="$CAFFE_MINING_CACHE/venv"
CAFFE_MINING_PYTHON="$CAFFE_MINING_VENV/bin/python"
export CCACHE_DIR="$CAFFE_MINING_CACHE/ccache"

# OpenBLAS falls back to its generic kernel (about 4x slower) on CPUs it does not know, e.g. Debian 12's 0.3.21 on
# recent Xeons: give it its tuned kernel (OPENBLAS_CORETYPE) for everything the calling script runs, never over a
# value already set (scripts/openblas_kernel.py). Call it after build.sh (OpenBLAS and the venv exist by then).
# Prints one line when it sets the variable, nothing otherwise.
use_tuned_openblas_kernel() {
  local exports
  exports=$("$CAFFE_MINING_PYTHON" "$CAFFE_MINING_REPO/scripts/openblas_kernel.py" --shell) || return 0
  eval "$exports"
}
