"""scripts/device_summary.py on logs shaped like a device check's (the formats of pytest's JUnit XML, gtest,
`caffe train` and `caffe time`): every count and verdict lands in the summary, failures included."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GTEST = """[==========] Running 5 tests from 2 test suites.
[       OK ] HardNetLossLayerTest/2.TestGradientGPU (12 ms)
[       OK ] HardNetLossLayerTest/0.TestForward (1 ms)
[  FAILED  ] MiningContrastiveLossLayerTest/3.TestBackwardGPU, where TypeParam = caffe::GPUDevice<double>
[==========] 5 tests from 2 test suites ran. (40 ms total)
[  PASSED  ] 4 tests.
[  FAILED  ] 1 test, listed below:
[  FAILED  ] MiningContrastiveLossLayerTest/3.TestBackwardGPU, where TypeParam = caffe::GPUDevice<double>
"""
TRAIN = """I1130 caffe.cpp:204] Using GPUs 0
I1130 solver.cpp:218] Iteration 0 (0 iter/s, 0.1s/25 iters), loss = 0.52
I1130 solver.cpp:218] Iteration 25 (300 iter/s, 0.08s/25 iters), loss = 0.31
I1130 solver.cpp:464] Optimization Done.
"""
TIME = """### hardnet_N1024.prototxt
I1130 caffe.cpp:400] hardnet_min\tforward: 0.25 ms.
I1130 caffe.cpp:403] hardnet_min\tbackward: 0.125 ms.
### contrastive_N65536.prototxt
I1130 caffe.cpp:400] caffe_contrastive\tforward: 1.5 ms.
I1130 caffe.cpp:403] caffe_contrastive\tbackward: 2 ms.
"""
XML = ('<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="0" failures="2" skipped="1" tests="10">'
       '</testsuite></testsuites>')


def test_summary_reads_every_log(tmp_path):
    logs, bench = tmp_path / "logs", tmp_path / "bench"
    logs.mkdir(), bench.mkdir()
    (logs / "steps.tsv").write_text("step\tstatus\tseconds\nunpack\t0\t7\ngtests\t1\t40\nmemcheck\tnot run "
                                    "(deadline)\t0\n")
    (logs / "environment.log").write_text("GPU 0: NVIDIA H200 (UUID: x)\nname, driver\n")
    (logs / "gpu_tests.xml").write_text(XML)
    (logs / "gtests.log").write_text(GTEST)
    (logs / "train_siamese_minimal.log").write_text(TRAIN)
    (logs / "train_hardnet_minimal.log").write_text(TRAIN.replace("0.31", "0.61"))
    (logs / "caffe_time.log").write_text(TIME)
    (logs / "memcheck.log").write_text("5 passed in 30.1s\n========= ERROR SUMMARY: 0 errors\n")
    (bench / "results_gpu.md").write_text("| the | table |\n")
    done = subprocess.run([sys.executable, "scripts/device_summary.py", "--logs", str(logs), "--bench", str(bench)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    text = done.stdout
    assert "| unpack | pass | 7 |" in text and "| gtests | 1 | 40 |" in text
    assert "| memcheck | not run (deadline) | 0 |" in text
    assert "GPU tests (pytest tests/gpu): 7 passed, 2 failed, 0 errors, 1 skipped (of 10)" in text
    assert "memcheck subset (compute-sanitizer): 5 passed; ERROR SUMMARY: 0 errors" in text
    assert "4 passed (1 of them GPU), 1 failed: MiningContrastiveLossLayerTest/3.TestBackwardGPU\n" in text
    assert "siamese_minimal: finished on the GPU: True; loss 0.52 -> 0.31 (loss went down)" in text
    assert "hardnet_minimal: finished on the GPU: True; loss 0.52 -> 0.61 (loss did NOT go down)" in text
    assert "| hardnet_N1024.prototxt | hardnet_min | 0.250 ms | 0.125 ms |" in text
    assert "| contrastive_N65536.prototxt | caffe_contrastive | 1.500 ms | 2.000 ms |" in text
    assert text.rstrip().endswith("| the | table |")
