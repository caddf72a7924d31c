"""The HardNet CPU miner scans float rows in vector lanes: AVX2 (8) where the CPU has it, SSE2 (4) otherwise, and
CAFFE_MINING_CPU_LANES=sse2 (read once per process) forces SSE2. Both paths must decide and compute to the same bits:
the decision tests at the last bit run again here in a process on the SSE2 path."""
import os
import subprocess
import sys
from pathlib import Path

import caffe_mining._core as core

REPO = Path(__file__).resolve().parent.parent
DECISION_TESTS = ["tests/test_hardnet_min_rounding.py", "tests/test_core_boundaries.py"]


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
