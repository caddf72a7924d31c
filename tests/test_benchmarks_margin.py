"""The MarginLoss benchmark suite (`python -m benchmarks run --suite margin`), smallest size: it runs, prints its
table, every configuration's loss agrees with the NumPy reference, and pml's MarginLoss (where installed) computes the
core's loss on the core's triplets. No timing assertions (this machine is shared and noisy)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of the repository, not an installed package

import caffe_mining  # noqa: E402
from benchmarks import margin_suite  # noqa: E402


def test_batch_is_p_by_k_unit_rows_with_both_hinges_active():
    x, labels = margin_suite.margin_batch(64, 128)
    assert x.dtype == np.float32 and x.shape == (64, 128)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert labels.tolist() == np.repeat(np.arange(16), 4).tolist()
    result = caffe_mining.margin_loss(x, labels, **margin_suite.MARGIN_CONFIGS[0].kwargs())
    pos_on = result.pos_dist - margin_suite.BETA + margin_suite.MARGIN > 0
    neg_on = margin_suite.BETA - result.neg_dist + margin_suite.MARGIN > 0
    assert pos_on.any() and (~pos_on).any() and neg_on.any()


def test_smoke_run_prints_the_table_and_agrees(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--suite", "margin", "--smoke", "--no-torch",
                           "--no-memory", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| N | implementation | median | IQR | × SGEMM | × pml | loss |" in done.stdout
    results = json.loads((tmp_path / "results_margin.json").read_text())
    names = {row["impl"] for row in results["margin"]}
    assert names == {margin_suite.FLOOR, *(margin_suite.core_name(c) for c in margin_suite.MARGIN_CONFIGS)}
    assert all(row["agrees"] for row in results["margin"] if row["impl"] != margin_suite.FLOOR)
    assert (tmp_path / "results_margin.md").read_text() in done.stdout


def test_pml_computes_the_core_loss_on_the_core_triplets():
    from benchmarks.hardnet_torch import import_torch

    torch = import_torch(1)
    if torch is None or not margin_suite.pml_available():
        pytest.skip("torch / pytorch-metric-learning not installed (python -m benchmarks setup-torch)")
    x, labels = margin_suite.margin_batch(32, 16)
    core = caffe_mining.margin_loss(x, labels, backward=False, **margin_suite.MARGIN_CONFIGS[0].kwargs())
    pml = margin_suite.PmlRunner(torch, x, labels)
    assert pml.loss_of(np.asarray(core.triplets)) == pytest.approx(float(core.loss), rel=1e-5)
    assert np.isfinite(pml())
