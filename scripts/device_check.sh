#!/usr/bin/env bash
# The one prepared check of every CUDA path, for a GPU machine (one H200, CUDA 13, Python 3.12 with CuPy,
# PyTorch and pybind11, compute-sanitizer; no Caffe libraries, no package registry), run from a copy of the
# working tree with device_payload/ (scripts/package_device.py) beside it:
#
#   bash scripts/device_check.sh            # there: builds the GPU bindings, runs the GPU tests (and a subset under
#                                           # compute-sanitizer memcheck), the layers' gtests on the GPU, caffe
#                                           # train -gpu 0 of both minimal solvers, caffe time -gpu 0 of each layer
#                                           # and the GPU benchmark; writes $OUT/summary.md, $OUT/logs.tar.xz and
#                                           # the benchmark's results; ends within DEVICE_CHECK_BUDGET_S (420 s)
#   bash scripts/device_check.sh --check    # here (CI): the payload is complete and what travels fits in 64 MiB
#
# Every step has its own time limit and the whole run a deadline: a step that would start too late is recorded
# as not run. The exit status is 0 only when every step ran and passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

if [ "${1:-}" = "--check" ]; then
  bash -n "$REPO/scripts/device_check.sh" || exit 1
  for needed in tests/gpu/gpu_support.py tests/gpu/test_*_gpu.py \
                setup.py benchmarks/gpu.py \
                benchmarks/caffe_time_nets.py scripts/device_summary.py scripts/openblas_kernel.py \
                models/siamese_minimal/solver.prototxt models/hardnet_minimal/solver.prototxt; do
    [ -f "$needed" ] || { echo "device_check --check: $needed missing" >&2; exit 1; }
  done
  exec "${CAFFE_MINING_PYTHON:-python3}" "$REPO/scripts/package_device.py" --check
fi

OUT=${OUT:-/tmp/device_check_out}
WORK=${DEVICE_CHECK_WORK:-/tmp/device_check}
LOGS=$WORK/logs
BUDGET=${DEVICE_CHECK_BUDGET_S:-420}
DEADLINE=$((SECONDS + BUDGET))
PY=${PYTHON:-python3}
rm -rf "$WORK"
mkdir -p "$OUT" "$LOGS" "$WORK/prefix"
STEPS=$LOGS/steps.tsv
printf 'step\tstatus\tseconds\n' > "$STEPS"
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO/python GLOG_logtostderr=1

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in $LOGS/NAME.log, under min(LIMIT_S, time left).
step() {
  local name=$1 limit=$2 left start status
  shift 2
  left=$((DEADLINE - SECONDS - 15))
  if [ "$left" -lt 20 ]; then
    printf '%s\tnot run (deadline)\t0\n' "$name" >> "$STEPS"
    echo "== $name: not run (deadline)"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)"
  start=$SECONDS
  timeout -k 5 "$limit" bash -c '"$@"' step "$@" > "$LOGS/$name.log" 2>&1  # bash -c: steps are functions
  status=$?
  [ "$status" -eq 124 ] && status="timeout"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$STEPS"
  echo "   -> $status in $((SECONDS - start)) s"
  [ "$status" = 0 ]
}

environment() {
  nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  command -v nvcc && nvcc --version | tail -2
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
  "$PY" --version; "$PY" -c "import numpy, cupy, pybind11; print('numpy', numpy.__version__, 'cupy', \
cupy.__version__, 'pybind11', pybind11.__version__)"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" || true
  uname -a; cat /etc/os-release | head -2; nproc
}

# The payload: Debian libraries into a prefix (never over /), the Caffe binaries and data, the library path.
unpack() {
  local deb
  for deb in "$REPO"/device_payload/debs/*.deb; do
    if command -v dpkg > /dev/null; then
      dpkg -x "$deb" "$WORK/prefix" || return 1
    else  # a .deb is an ar archive holding data.tar.xz: unpacked the same way without dpkg
      "$PY" -c "import io, sys, tarfile
raw = open(sys.argv[1], 'rb').read(); at = 8
while at < len(raw):
    name, size = raw[at:at + 16].strip().decode(), int(raw[at + 48:at + 58]); at += 60
    if name.startswith('data.tar'):
        tarfile.open(fileobj=io.BytesIO(raw[at:at + size])).extractall(sys.argv[2])
    at += size + size % 2" "$deb" "$WORK/prefix" || return 1
    fi
  done
  "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
    "$REPO/device_payload/caffe.tar.xz" "$WORK" || return 1
  # Python gets only OpenBLAS and its Fortran runtime (for caffe_mining._core), in a folder of their own: the
  # other Debian libraries must not shadow the system's own under its Python, CuPy and PyTorch.
  local lib
  mkdir -p "$WORK/pylibs"
  for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    ln -sf "$(find "$WORK/prefix" -name "$lib" | head -1)" "$WORK/pylibs/$lib" || return 1
  done
  ln -sf libopenblas.so.0 "$WORK/pylibs/libopenblas.so"
  {
    find "$WORK/prefix" "$WORK/caffe/lib" -name '*.so*' -printf '%h\n' | sort -u
    # CUDA's own libraries (cuBLAS, cuRAND): the toolkit's folder, else the pip wheels'.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && echo "$d"; done
    "$PY" -c "import glob, os, nvidia; [print(d) for p in nvidia.__path__ for d in glob.glob(os.path.join(p, '*', 'lib')) + glob.glob(os.path.join(p, '*', '*', 'lib'))]" 2>/dev/null
  } | paste -sd: > "$WORK/library_path"
  LD_LIBRARY_PATH=$(cat "$WORK/library_path") ldd "$WORK/caffe/bin/caffe" "$WORK/caffe/bin/test.testbin"
  ! LD_LIBRARY_PATH=$(cat "$WORK/library_path") ldd "$WORK/caffe/bin/caffe" "$WORK/caffe/bin/test.testbin" \
    | grep "not found"
}

# Python with OpenBLAS beside it; the Caffe binaries with every library of the payload.
py() { LD_LIBRARY_PATH="$WORK/pylibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$PY" "$@"; }
caffe_bin() { LD_LIBRARY_PATH=$(cat "$WORK/library_path") "$WORK/caffe/bin/$1" "${@:2}"; }

build_bindings() {
  CAFFE_MINING_CUDA=1 CAFFE_MINING_CUDA_ARCHS=90 py setup.py build_ext --inplace --parallel "$(nproc)" \
    -I "$WORK/caffe/include/openblas" -L "$WORK/pylibs" -R "$WORK/pylibs" &&
  py -c "from caffe_mining import _core, _core_cuda; print('devices', _core_cuda.device_count())"
}

gpu_tests() {
  CAFFE_MINING_REQUIRE_GPU=1 py -m pytest -q -p no:cacheprovider -rfE tests/gpu --junitxml="$LOGS/gpu_tests.xml"
}

memcheck() {
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  CAFFE_MINING_REQUIRE_GPU=1 LD_LIBRARY_PATH="$WORK/pylibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$sanitizer" --tool memcheck --error-exitcode 99 "$PY" -m pytest -q -p no:cacheprovider -m memcheck tests/gpu
}

gtests() {
  (cd "$WORK/caffe" && caffe_bin test.testbin --gtest_filter='*' 0)
}

caffe_train() {
  local model=$1
  echo "$WORK/caffe/data/$model/pairs.h5" > "models/$model/pairs_h5_list.txt"
  caffe_bin caffe train --solver="models/$model/solver.prototxt" -gpu 0
}

caffe_time() {
  local net status=0
  py -m benchmarks.caffe_time_nets --out "$WORK/nets" > "$WORK/nets.txt" || return 1
  while read -r net; do
    echo "### $(basename "$net")"
    caffe_bin caffe time --model="$net" -gpu 0 --iterations=10 2>&1 || status=1
  done < "$WORK/nets.txt"
  return $status
}

benchmark() {
  py -m benchmarks run --device gpu --out "$WORK/bench"
}

export REPO WORK LOGS PY
export -f environment unpack py caffe_bin build_bindings gpu_tests memcheck gtests caffe_train caffe_time benchmark
step environment 60 environment
step unpack 90 unpack
# Debian's OpenBLAS 0.3.21 (the payload's) does not know recent Xeons and runs its generic kernel there: the tuned
# one for every later step, unless OPENBLAS_CORETYPE is preset (scripts/openblas_kernel.py; one line when it sets).
openblas_exports=$(py scripts/openblas_kernel.py --shell) && eval "$openblas_exports"
py scripts/openblas_kernel.py > "$LOGS/openblas_kernel.log" 2>&1
step build_bindings 150 build_bindings
step gpu_tests 150 gpu_tests
step gtests 120 gtests
step train_siamese_minimal 45 caffe_train siamese_minimal
step train_hardnet_minimal 45 caffe_train hardnet_minimal
step caffe_time 60 caffe_time
step benchmark 120 benchmark
step memcheck 90 memcheck

"$PY" scripts/device_summary.py --logs "$LOGS" --bench "$WORK/bench" > "$OUT/summary.md" 2> "$LOGS/summary.log"
cp "$LOGS/gpu_tests.xml" "$OUT/" 2>/dev/null
cp "$WORK"/bench/results_gpu.* "$OUT/" 2>/dev/null
"$PY" -c "import sys, tarfile, os
with tarfile.open(sys.argv[1], 'w:xz') as tar:
    [tar.add(p, arcname=os.path.basename(p)) for p in sys.argv[2:] if os.path.exists(p)]" \
  "$OUT/logs.tar.xz" "$LOGS" "$WORK/nets"
cat "$OUT/summary.md"
awk -F'\t' 'NR > 1 && $2 != "0" { failed = 1 } END { exit failed }' "$STEPS"
