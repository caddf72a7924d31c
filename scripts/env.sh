# Paths shared by the scripts (sourced, not run). Everything built or downloaded lives outside the clone.
CAFFE_MINING_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CAFFE_MINING_CACHE="${CAFFE_MINING_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-mining}"
CAFFE_MINING_VENV="$CAFFE_MINING_CACHE/venv"
CAFFE_MINING_PYTHON="$CAFFE_MINING_VENV/bin/python"
export CCACHE_DIR="$CAFFE_MINING_CACHE/ccache"
