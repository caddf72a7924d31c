"""The CPU fast paths run float rows in vector lanes: AVX2 (8) where the CPU has it, SSE2 (4) otherwise, and
CAFFE_MINING_CPU_LANES=sse2 (read once per process) forces SSE2. Those paths: HardNet's row scan (MIN, RANDOM), its
AVERAGE forward and backward, the distance rows of dots_to_distances (AVERAGE, TripletLoss), TripletLoss's lane scans
(BATCH_HARD, SEMI_HARD), BATCH_ALL's terms (hinge and soft margin) and its dense S, MarginLoss's distances.
Both widths must decide and compute to the same bits: the decision tests at the last bit and the bit-identity fixture
run again here in a process on the SSE2 path, and both widths hash the same outputs on random float inputs whose
sizes leave every tail (rows and columns past the last multiple of 4 or 8)."""
import os
import subprocess
import sys
from pathlib import Path

import caffe_mining._core as core

REPO = Path(__file__).resolve().parent.parent
DECISION_TESTS = ["tests/test_hardnet_min_rounding.py", "tests/test_core_boundaries.py",
                  "tests/test_core_bit_identity.py", "tests/test_triplet_cpu_scans.py"]

# Prints one hash per case of the float outputs (losses, gradients, decisions) of the lane paths.
OUTPUTS_SCRIPT = r"""
import hashlib, itertools
import numpy as np
import caffe_mining._core as core
for n, swap, loss_type, labelled, reduce in itertools.product(
        (8, 13, 16, 23, 37, 70, 150), (False, True), ("TRIPLET_MARGIN", "CONTRASTIVE"), (False, True),
        ("AVERAGE", "MIN")):
    rng = np.random.default_rng(n * 7 + swap)
    a = rng.standard_normal((n, 16)).astype(np.float32)
    p = (a + 0.5 * rng.standard_normal((n, 16))).astype(np.float32)
    p[1] = a[3]  # a distance at the clamp, a duplicate
    labels = rng.integers(0, 4, n).astype(np.float32) if labelled else None
    out = core.hardnet_loss(a, p, labels, margin=1.0, anchor_swap=swap, batch_reduce=reduce, loss_type=loss_type,
                            duplicate_threshold=0.05, loss_weight=1.5)
    print(n, swap, loss_type, labelled, reduce,
          hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in out)).hexdigest()[:16])
for n, mining, soft in itertools.product((8, 13, 37), ("BATCH_HARD", "SEMI_HARD", "BATCH_ALL"), (False, True)):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    out = core.triplet_loss(x, rng.integers(0, 3, n).astype(np.float32), mining=mining, soft_margin=soft)
    print(n, mining, soft, hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for v in out)).hexdigest()[:16])
"""


def cpu_has_avx2():
    with open("/proc/cpuinfo") as cpuinfo:
        return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)


def lanes_in_a_process(env):
    code = "import caffe_mining._core as c; print(c.hardnet_cpu_lanes())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(result.stdout)


def test_the_widest_lanes_the_cpu_has_by_default():
    assert core.hardnet_cpu_lanes() == (8 if cpu_has_avx2() else 4)


def test_sse2_path_decides_to_the_bit_as_the_rule():
    env = dict(os.environ, CAFFE_MINING_CPU_LANES="sse2")
    assert lanes_in_a_process(env) == 4
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *DECISION_TESTS],
                            env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_both_widths_give_the_same_bits_on_random_inputs():
    if not cpu_has_avx2():
        import pytest

        pytest.skip("this CPU has no AVX2: only the SSE2 path exists here, nothing to compare")

    def hashes(env):
        return subprocess.run([sys.executable, "-c", OUTPUTS_SCRIPT], env=env, capture_output=True, text=True,
                              check=True).stdout.splitlines()

    wide = hashes(dict(os.environ))
    narrow = hashes(dict(os.environ, CAFFE_MINING_CPU_LANES="sse2"))
    assert len(wide) == 7 * 2 * 2 * 2 * 2 + 18
    differing = [w for w, s in zip(wide, narrow) if w != s]
    assert not differing, differing[:5]
