"""The GPU tests' own logic, without a GPU: tests/gpu run against tests/gpu/cpu_standin.py (the CPU core posing as
_core_cuda) must pass, and with a wrong pick and a 0.1% gradient error planted in every result they must fail.
This checks the tests (input builders, exactness claims against the reference, message comparisons), not the
CUDA code: no GPU has run here."""
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def run_gpu_suite(standin, *args):
    env = dict(os.environ, CAFFE_MINING_GPU_STANDIN=standin, CAFFE_MINING_REQUIRE_GPU="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "python"), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests/gpu", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_suite_passes_on_the_cpu_standin():
    # N = 4096 costs seconds on the CPU and tells nothing new; identical float32 rows do not tie on the CPU core
    # (OpenBLAS's sgemm gives copies different dot products), which that GPU test asks of the GPU only.
    result = run_gpu_suite("cpu", "-k", "not large_batch and not identical_rows")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "GPU tests did not run" not in result.stdout


# Tests of decisions and values; where the plant cannot apply (N = 1, or N = 2 for HardNet) they pass.
PLANTED_SELECTION = "every_option or (radix_select and 257) or (sizes_that and 65) or memcheck or random_takes"
PLANT_CANNOT_APPLY = {"test_memcheck_contrastive[1]", "test_memcheck_hardnet[2]"}


def test_gpu_suite_catches_planted_errors():
    result = run_gpu_suite("planted", "-k", PLANTED_SELECTION)
    passed = {line.split("::")[-1] for line in result.stdout.splitlines() if line.startswith("PASSED")}
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode == 1 and len(failed) >= 25, result.stdout[-3000:]
    assert passed <= PLANT_CANNOT_APPLY, passed
