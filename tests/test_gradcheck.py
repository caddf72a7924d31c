"""The gradient-check harness: it passes every correct target, catches planted bugs, survives kinks; its CLI."""
import dataclasses
import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import caffe_mining
from caffe_mining import gradcheck
from caffe_mining.losses import LOSSES
from caffe_mining.options import BATCH_REDUCES, ContrastiveOptions, HardNetOptions

# Every loss's cases, from its spec (caffe_mining.losses.<loss>.GRADCHECK_CASES), in the registry's order.
ALL_PROBLEMS = [(spec.type_name, options, labels) for spec in LOSSES.values()
                for options, labels in spec.gradcheck_cases]


def problem_id(problem):
    """The loss and its options' fields (the spec's gradcheck_id_fields, and the label bottom's presence where it
    is optional); the id also seeds the case's inputs."""
    layer, options, labels = problem
    spec = LOSSES[layer]
    fields = {k: v for k, v in dataclasses.asdict(options).items() if v is not None and k not in ("eps",)}
    if spec.gradcheck_id_fields is not None:
        fields = {k: fields[k] for k in spec.gradcheck_id_fields}
    if not spec.label_required:
        fields["labels"] = labels
    return f"{layer}-" + "-".join(f"{k}={v}" for k, v in fields.items())


def run_check(layer, options, labels, target_kind, n=8, dim=4, seed=0, loss_weight=0.6, fn=None, **target_kwargs):
    problem = gradcheck.make_problem(layer, options, loss_weight, labels, n, seed)
    if target_kind == "pycaffe":
        shapes = {b: (n, dim) for b in problem.spec.differentiable}
        if labels:
            shapes[problem.spec.label_bottom] = (n,)
        target = gradcheck.PycaffeTarget(problem, shapes, **target_kwargs)
    else:
        dtype = target_kwargs.get("dtype", "float64")
        target = gradcheck.FunctionTarget(problem, fn or getattr(problem.spec, f"{target_kind}_fn"), dtype)
    return gradcheck.check(problem, target, n, dim, seed)


def failed_checks(report):
    return {(row.check, row.bottom) for row in report.rows if not row.passed}


# ---------------------------------------------------------------------------------------------------------------
# Correct targets pass

@pytest.mark.parametrize("problem", ALL_PROBLEMS, ids=problem_id)
@pytest.mark.parametrize("target, dtype", [("reference", "float64"), ("core", "float64"), ("core", "float32")])
def test_correct_targets_pass(problem, target, dtype):
    report = run_check(*problem, target, dtype=dtype, seed=zlib.crc32(problem_id(problem).encode()) % 1000)
    assert report.passed, report.format()
    assert report.worst("reference gradient") <= gradcheck.TOLERANCES[dtype].reference.rtol * 10


@pytest.mark.parametrize("problem", ALL_PROBLEMS, ids=problem_id)
def test_cpp_layer_passes_through_pycaffe(caffe_with_layers, problem):
    report = run_check(*problem, "pycaffe", engine="caffe", seed=zlib.crc32(problem_id(problem).encode()) % 1000)
    assert report.passed, report.format()


@pytest.mark.parametrize("problem", ALL_PROBLEMS[::3], ids=problem_id)
def test_python_layer_passes_through_pycaffe(caffe, problem):
    report = run_check(*problem, "pycaffe", engine="python", seed=zlib.crc32(problem_id(problem).encode()) % 1000)
    assert report.passed, report.format()


# ---------------------------------------------------------------------------------------------------------------
# Planted bugs (each in a copy: a wrapper around the shipped function, or a subclass of the Python layer)

def seed000_backward_over_n(feat, feat_p, sim, mining_ratio=1, loss_weight=1.0, **kwargs):
    """Seed 000's bug: the loss divides by 2K, the backward (Caffe's alpha = 1/N) by N: gradients scaled by K/N."""
    result = caffe_mining.mining_contrastive_loss(feat, feat_p, sim, mining_ratio=mining_ratio, loss_weight=loss_weight,
                                                  **kwargs)
    if result.grad_feat is None:  # forward only
        return result
    n = np.shape(feat)[0]
    scale = (n // mining_ratio) / n
    return result._replace(grad_feat=result.grad_feat * scale, grad_feat_p=result.grad_feat_p * scale)


def flipped_sign_on_dissimilar(feat, feat_p, sim, **kwargs):
    """The dissimilar (hinge) pairs' gradient with the wrong sign."""
    result = caffe_mining.mining_contrastive_loss(feat, feat_p, sim, **kwargs)
    if result.grad_feat is None:
        return result
    sign = np.where(np.asarray(sim).reshape(-1) == 0, -1.0, 1.0)[:, None]
    return result._replace(grad_feat=result.grad_feat * sign, grad_feat_p=result.grad_feat_p * sign)


def swap_backward_ignores_columns(anchor, positive, labels=None, anchor_swap=False, **kwargs):
    """anchor_swap mined in the forward, but the backward routes every negative through D_ij (the row)."""
    forward = caffe_mining.hardnet_loss(anchor, positive, labels, anchor_swap=anchor_swap, **kwargs)
    rows_only = caffe_mining.hardnet_loss(anchor, positive, labels, anchor_swap=False, **kwargs)
    return forward._replace(grad_anchor=rows_only.grad_anchor, grad_positive=rows_only.grad_positive)


def swap_ignores_columns(anchor, positive, labels=None, anchor_swap=False, **kwargs):
    """anchor_swap accepted and ignored altogether: only D_ij is mined."""
    return caffe_mining.hardnet_loss(anchor, positive, labels, anchor_swap=False, **kwargs)


def test_planted_seed000_bug_is_caught():
    options = ContrastiveOptions(mining_ratio=4)
    report = run_check("MiningContrastiveLoss", options, True, "core", fn=seed000_backward_over_n)
    assert failed_checks(report) == {("reference gradient", "feat"), ("reference gradient", "feat_p"),
                                     ("finite differences", "feat"), ("finite differences", "feat_p")}
    assert report.worst("reference gradient") == pytest.approx(1 - 2 / 8)  # K/N = 2/8: off by 75%
    # The same bug is invisible at mining_ratio 1 (K = N): there the gradient is right, and the harness agrees.
    assert run_check("MiningContrastiveLoss", ContrastiveOptions(), True, "core", fn=seed000_backward_over_n).passed


@pytest.mark.parametrize("legacy", [False, True])
def test_planted_sign_flip_is_caught(legacy):
    report = run_check("MiningContrastiveLoss", ContrastiveOptions(legacy_version=legacy, mining_ratio=2), True,
                       "core", fn=flipped_sign_on_dissimilar)
    assert ("finite differences", "feat") in failed_checks(report)
    assert ("reference gradient", "feat_p") in failed_checks(report)
    assert report.rows[0].passed  # the forward is right


@pytest.mark.parametrize("batch_reduce", BATCH_REDUCES)
def test_planted_swap_backward_ignoring_columns_is_caught(batch_reduce):
    report = run_check("HardNetLoss", HardNetOptions(anchor_swap=True, batch_reduce=batch_reduce), False, "core",
                       fn=swap_backward_ignores_columns)
    assert {("reference gradient", "anchor"), ("finite differences", "anchor")} <= failed_checks(report), \
        report.format()


def test_planted_swap_ignoring_columns_is_caught():
    report = run_check("HardNetLoss", HardNetOptions(anchor_swap=True), True, "core", fn=swap_ignores_columns)
    assert {("forward", "loss"), ("decisions", "-"), ("reference gradient", "positive")} <= failed_checks(report)


PLANTED_LAYERS = '''
import dataclasses

from caffe_mining.layers import HardNetLossLayer, MiningContrastiveLossLayer


class Seed000Layer(MiningContrastiveLossLayer):
    """Seed 000's backward: divided by N instead of 2K (gradient times K/N)."""

    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        n = bottom[0].data.shape[0]
        for i in (0, 1):
            bottom[i].diff[...] *= (n // self.options.mining_ratio) / n


class SwapIgnoresColumnsLayer(HardNetLossLayer):
    """anchor_swap's gradient routed through the rows only."""

    def backward(self, top, propagate_down, bottom):
        mined_with = self.options
        self.options = dataclasses.replace(mined_with, anchor_swap=False)
        try:
            super().backward(top, propagate_down, bottom)
        finally:
            self.options = mined_with
'''


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    (tmp_path / "planted_layers.py").write_text(PLANTED_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_planted_python_layers_are_caught_through_pycaffe(caffe, planted_module):
    report = run_check("MiningContrastiveLoss", ContrastiveOptions(mining_ratio=4), True, "pycaffe", engine="python",
                       python_layer="planted_layers.Seed000Layer")
    assert ("finite differences", "feat") in failed_checks(report), report.format()
    assert ("reference gradient", "feat") in failed_checks(report)
    report = run_check("HardNetLoss", HardNetOptions(anchor_swap=True), True, "pycaffe", engine="python",
                       python_layer="planted_layers.SwapIgnoresColumnsLayer")
    assert ("finite differences", "anchor") in failed_checks(report), report.format()


# ---------------------------------------------------------------------------------------------------------------
# Kinks and decision flips do not fail a correct target

def test_hinge_kink_is_stepped_over():
    # Pair 1 (dissimilar) sits 3e-5 inside the margin: a float64 step of 1e-4 crosses the hinge.
    feat = np.array([[0.3, 0.1], [0.0, 0.0], [0.2, -0.2], [0.0, 0.5]])
    feat_p = np.array([[0.0, 0.0], [1.0 - 3e-5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    inputs = {"feat": feat, "feat_p": feat_p, "sim": np.array([1.0, 0.0, 1.0, 0.0])}
    problem = gradcheck.make_problem("MiningContrastiveLoss", ContrastiveOptions(legacy_version=False), 1.0)
    target = gradcheck.FunctionTarget(problem, caffe_mining.mining_contrastive_loss)
    # A naive central difference across the kink is wrong for feat[1, 0] ...
    h = gradcheck.TOLERANCES["float64"].step
    plus, minus = feat.copy(), feat.copy()
    plus[1, 0] += h
    minus[1, 0] -= h
    naive = (target.evaluate({**inputs, "feat": plus}, False).loss
             - target.evaluate({**inputs, "feat": minus}, False).loss) / (2 * h)
    analytic = target.evaluate(inputs).grads["feat"][1, 0]
    assert abs(naive - analytic) > 1e-6
    # ... the harness sees the kink, retries with a smaller step, and passes.
    report = gradcheck.check(problem, target, 4, 2, inputs=inputs)
    assert report.passed, report.format()
    assert "smaller step" in report.format()


def test_decision_flip_is_stepped_over():
    # Similar pairs 0 and 1 differ in cost by 1e-6; K = 2 picks one of them (and one dissimilar pair).
    feat = np.array([[0.5, 0.0], [0.5 + 1e-6, 0.0], [0.1, 0.0], [0.3, 0.3]])
    feat_p = np.zeros((4, 2))
    inputs = {"feat": feat, "feat_p": feat_p, "sim": np.array([1.0, 1.0, 0.0, 0.0])}
    problem = gradcheck.make_problem("MiningContrastiveLoss", ContrastiveOptions(mining_ratio=2), 1.0)
    target = gradcheck.FunctionTarget(problem, caffe_mining.mining_contrastive_loss)
    report = gradcheck.check(problem, target, 4, 2, inputs=inputs)
    assert report.passed, report.format()
    assert "left out (kink)" in report.format()  # feat[0, 0] / feat[1, 0] flip the pick at every step


# ---------------------------------------------------------------------------------------------------------------
# CLI

def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "caffe_mining.gradcheck", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_help_shows_an_example():
    result = cli("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "python -m caffe_mining.gradcheck --layer" in result.stdout
    assert "exit status" in result.stdout


def test_cli_passing_run_prints_a_table():
    result = cli("--layer", "HardNetLoss", "--target", "core", "--param", "batch_reduce=AVERAGE", "--param",
                 "anchor_swap=true", "--n", "6", "--dim", "3", "--seed", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gradcheck HardNetLoss [") and "batch_reduce=AVERAGE" in lines[0]
    assert "target: core (bindings) (float64, cpu)  n=6 dim=3 seed=4" in lines[1]
    for check, bottom in [("forward", "loss"), ("reference gradient", "anchor"), ("finite differences", "positive")]:
        assert any(line.startswith(check) and f" {bottom} " in line and line.rstrip().endswith(("pass", "coords"))
                   for line in lines), result.stdout
    assert lines[-1] == "PASSED"


def test_cli_failing_run_exits_1(monkeypatch, capsys):
    spec = gradcheck.SPECS["MiningContrastiveLoss"]
    monkeypatch.setitem(gradcheck.SPECS, "MiningContrastiveLoss", dataclasses.replace(spec, core_fn=seed000_backward_over_n))
    assert gradcheck.main(["--target", "core", "--param", "mining_ratio=4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and out.rstrip().endswith("FAILED")


@pytest.mark.parametrize("args, message", [
    (["--param", "mining_ratoi=2"], "unknown parameter 'mining_ratoi'"),
    (["--param", "mining_ratio=0"], "mining_ratio must be >= 1. Got: 0"),
    (["--layer", "HardNetLoss", "--param", "batch_reduce=MAX"], "batch_reduce must be one of MIN, AVERAGE, RANDOM"),
    (["--param", "margin"], "parameters are key=value"),
    (["--device", "gpu"], "--device gpu needs a pycaffe target"),
    (["--n", "0"], "--n and --dim must be >= 1"),
])
def test_cli_bad_usage_exits_2(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("target", ["caffe", "python"])
@pytest.mark.parametrize("args, message", [
    (["--layer", "HardNetLoss", "--n", "1"], "HardNetLoss needs N >= 2 pairs"),
    (["--layer", "HardNetLoss", "--param", "eps=0"], "eps"),
])
def test_cli_pycaffe_target_rejects_what_the_layer_would_abort_on(target, args, message):
    """Before building a net (Caffe's CHECK aborts with exit 134): the same exit 2 and message as the core target,
    with or without pycaffe on the path."""
    core = cli("--target", "core", *args)
    assert core.returncode == 2 and message in core.stderr
    result = cli("--target", target, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == core.stderr


def test_cli_missing_prototxt_says_so():
    result = cli("--target", "caffe", "--prototxt", "/nonexistent/net.prototxt", "--layer-name", "loss")
    assert result.returncode == 2, result.stderr
    assert result.stderr == "gradcheck: error: --prototxt /nonexistent/net.prototxt: no such file\n"


def test_cli_without_pycaffe_says_so(tmp_path):
    (tmp_path / "caffe").mkdir()  # a "caffe" that fails to import shadows any real one
    (tmp_path / "caffe" / "__init__.py").write_text("raise ImportError('no pycaffe in this test')\n")
    result = cli("--target", "caffe", env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 2
    assert "cannot import pycaffe (no pycaffe in this test)" in result.stderr and "PYTHONPATH" in result.stderr


def test_cli_checks_the_cpp_layer(caffe_with_layers):
    result = cli("--target", "caffe", "--layer", "HardNetLoss", "--param", "anchor_swap=true", "--param",
                 "loss_type=SOFTMAX")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "target: caffe (float32, cpu)" in result.stdout


def test_cli_catches_a_planted_python_layer(caffe, planted_module):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(planted_module), os.environ.get("PYTHONPATH", "")]))
    result = cli("--target", "python", "--python-layer", "planted_layers.Seed000Layer", "--param", "mining_ratio=4",
                 env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout


NET = textwrap.dedent('''
    name: "siamese_head" force_backward: true
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 5 } } }
    layer { name: "data_p" type: "Input" top: "data_p" input_param { shape { dim: 6 dim: 5 } } }
    layer { name: "sim" type: "Input" top: "sim" input_param { shape { dim: 6 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "feat"
            param { name: "w" } param { name: "b" } inner_product_param { num_output: 3 } }
    layer { name: "ip_p" type: "InnerProduct" bottom: "data_p" top: "feat_p"
            param { name: "w" } param { name: "b" } inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "%s" bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss" %s }
''')


@pytest.mark.parametrize("layer_text", [
    ("MiningContrastiveLoss", "contrastive_loss_param { margin: 0.8 mining_ratio: 2 }"),
    ("Python", "loss_weight: 1 python_param { module: 'caffe_mining.layers' layer: 'MiningContrastiveLossLayer' "
               "param_str: '{\"mining_ratio\": 3}' }"),
], ids=["cpp", "python"])
def test_cli_checks_a_layer_inside_a_net(caffe_with_layers, tmp_path, layer_text):
    path = tmp_path / "net.prototxt"
    path.write_text(NET % layer_text)
    result = cli("--target", "caffe", "--prototxt", str(path), "--layer-name", "loss")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "n=6 dim=3" in result.stdout  # the loss layer's bottoms are the InnerProduct outputs
    assert ("mining_ratio=2" if layer_text[0] != "Python" else "mining_ratio=3") in result.stdout


def test_cli_net_whose_data_is_missing(caffe_with_layers, tmp_path):
    """Caffe aborts on a data layer without its source: the shapes are read in a subprocess, and --n/--dim help."""
    path = tmp_path / "net.prototxt"
    path.write_text(textwrap.dedent('''
        name: "needs_data"
        layer { name: "pairs" type: "HDF5Data" top: "feat" top: "feat_p" top: "sim"
                hdf5_data_param { source: "does/not/exist.txt" batch_size: 16 } }
        layer { name: "loss" type: "MiningContrastiveLoss" bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss"
                contrastive_loss_param { mining_ratio: 4 } }
    '''))
    result = cli("--target", "caffe", "--prototxt", str(path), "--layer-name", "loss")
    assert result.returncode == 2
    assert "could not instantiate" in result.stderr and "does/not/exist.txt" in result.stderr
    assert "pass --n and --dim" in result.stderr
    result = cli("--target", "caffe", "--prototxt", str(path), "--layer-name", "loss", "--n", "16", "--dim", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mining_ratio=4" in result.stdout and "n=16 dim=3" in result.stdout
