#!/usr/bin/env bash
# The main job: build Caffe with our layers (CPU), train the siamese digits example with `caffe train`
# (MiningContrastiveLoss against Caffe's ContrastiveLoss, short run), evaluate and plot it, then
# gradient-check every C++ layer through pycaffe against the NumPy reference and finite differences.
#   bash scripts/main.sh            # a few minutes on 2 cores
#   bash scripts/main.sh --full     # the example's full run (3 seeds, longer training)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

example_args=(--quick)
[ "${1:-}" = "--full" ] && example_args=()

bash "$CAFFE_MINING_REPO/scripts/build.sh"
use_tuned_openblas_kernel
source "${CAFFE_MINING_BUILD_DIR:-$CAFFE_MINING_CACHE/build-cpu}/caffe-paths.sh"
export PYTHONPATH="$PYCAFFE_DIR${PYTHONPATH:+:$PYTHONPATH}"
export CAFFE_MINING_CAFFE_BIN="$CAFFE_BIN"
cd "$CAFFE_MINING_REPO"

echo "== siamese digits: caffe train with ContrastiveLoss and MiningContrastiveLoss, held-out evaluation"
"$CAFFE_MINING_PYTHON" models/siamese_digits/run.py "${example_args[@]}"

echo "== gradient check of the C++ layers through pycaffe"
# Every loss of the registry, with its spec's check_args (N, D and options).
checks=$("$CAFFE_MINING_PYTHON" -c 'from caffe_mining.losses import LOSSES
for spec in LOSSES.values(): print(spec.type_name, *spec.check_args)')
while read -r layer args; do
  # shellcheck disable=SC2086  # args: the spec's words, split on purpose
  "$CAFFE_MINING_PYTHON" -m caffe_mining.gradcheck --target caffe --layer "$layer" $args
done <<< "$checks"
