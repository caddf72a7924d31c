"""The kit's own e^x (x <= 0), log1p (0 <= x <= 1) and log (x >= 0) of common/exp_log.hpp, which TripletLoss's soft
margin and MarginLoss's sampler use on every path: tests/native/exp_log_accuracy.cpp sweeps each domain (evenly,
both ends, the subnormal and underflow edges of exp, tiny log1p arguments, log near 1 and over every magnitude,
subnormals included) and measures the error in ulp against a wider reference (float: double libm; double: long
double), and runs the same inputs in the lanes of a GCC vector, which must give the scalar code's bits. The header
promises 2 ulp; a wrong series length, a lost ln 2 correction or a missing subnormal step breaks it."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "native" / "exp_log_accuracy.cpp"
LINE = re.compile(r"^(\w+) (float|double) worst_ulp=([0-9.]+|nan|inf) at=\S+ inputs=(\d+) lane_mismatches=(\d+)$")
PROMISED_ULP = 2.0


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.fail("no C++ compiler (g++) to build the accuracy harness", pytrace=False)
    binary = tmp_path_factory.mktemp("exp_log1p") / "exp_log_accuracy"
    subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'caffe_layers/include'}",
                    str(HARNESS), "-o", str(binary)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    rows = {}
    ends = re.fullmatch(r"log_ends wrong=(\d+)", out.splitlines()[-1])
    assert ends, out
    rows["log_ends_wrong"] = int(ends.group(1))
    for line in out.splitlines()[:-1]:
        match = LINE.match(line)
        assert match, line
        name, dtype, worst, inputs, mismatches = match.groups()
        rows[(name, dtype)] = (float(worst), int(inputs), int(mismatches), line)
    return rows


SWEEPS = [(name, dtype) for name in ("exp", "log1p", "log1p_tiny", "log_near_one", "log_all")
          for dtype in ("float", "double")]


@pytest.mark.parametrize("name, dtype", SWEEPS)
def test_within_two_ulp_of_the_correctly_rounded_value(sweeps, name, dtype):
    worst, inputs, _, line = sweeps[(name, dtype)]
    assert inputs > 1_000_000, line
    assert worst <= PROMISED_ULP, line


@pytest.mark.parametrize("name, dtype", SWEEPS)
def test_vector_lanes_give_the_scalar_bits(sweeps, name, dtype):
    _, _, mismatches, line = sweeps[(name, dtype)]
    assert mismatches == 0, line


def test_log_of_zero_infinity_negative_and_nan(sweeps):
    assert sweeps["log_ends_wrong"] == 0
