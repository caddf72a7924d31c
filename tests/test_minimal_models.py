"""The minimal solvers in models/ train with the real `caffe train` CLI: data made by their scripts, a few
hundred iterations, and the loss goes down (so a layer that trains nothing fails here)."""
import os
import re
import subprocess
import sys

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [("siamese_minimal", "make_pairs.py"), ("hardnet_minimal", "make_data.py")]


@pytest.mark.parametrize("model,make_data", MODELS)
def test_minimal_model_trains_with_caffe_train(model, make_data, caffe_bin, tmp_path):
    subprocess.run([sys.executable, os.path.join(REPO, "models", model, make_data), "--data-dir", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True)
    run = subprocess.run([caffe_bin, "train", f"--solver=models/{model}/solver.prototxt"],
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "0"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Optimization Done." in run.stderr
    losses = [float(v) for v in re.findall(r"Iteration \d+.*?, loss = ([0-9.eE+-]+)", run.stderr)]
    assert len(losses) >= 2, run.stderr[-3000:]
    assert losses[-1] < losses[0], f"{model}: loss did not go down: {losses}"
