"""The loss kit: a loss stated in its own module (tests/kit_toy_loss.py) and registered in caffe_mining.losses.LOSSES
is checked by the gradient check's CLI and runs as a pycaffe Python layer, with no change to the generic code."""
import dataclasses

import numpy as np
import pytest

import kit_toy_loss as toy
from caffe_mining import gradcheck
from caffe_mining.losses import LOSSES
from caffe_mining.options import parse_param_str


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(LOSSES, toy.SPEC.type_name, toy.SPEC)
    return toy.SPEC


@pytest.mark.parametrize("args", [["--target", "core"], ["--target", "core", "--dtype", "float32"],
                                  ["--target", "reference", "--param", "margin=0.5"]])
def test_a_registered_loss_passes_the_gradient_check(registered, args, capsys):
    assert gradcheck.main(["--layer", "PairHingeLoss", "--n", "10", *args]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "gradcheck PairHingeLoss" in out and "finite differences   a" in out and "decisions" in out


def forgets_the_hinge(a, b, label, **kwargs):
    """Planted: open dissimilar pairs get no gradient."""
    result = toy.pair_hinge_loss(a, b, label, **kwargs)
    if result.grad_a is None:
        return result
    keep = ~result.hinge_open[:, None]
    return result._replace(grad_a=result.grad_a * keep, grad_b=result.grad_b * keep)


def test_a_planted_bug_in_a_registered_loss_is_caught(registered, monkeypatch, capsys):
    monkeypatch.setitem(LOSSES, "PairHingeLoss", dataclasses.replace(registered, core_fn=forgets_the_hinge))
    assert gradcheck.main(["--layer", "PairHingeLoss", "--target", "core"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_registered_loss_gets_option_parsing(registered, capsys):
    assert parse_param_str('{"margin": 2}', toy.PairHingeOptions) == toy.PairHingeOptions(2)
    assert gradcheck.main(["--layer", "PairHingeLoss", "--param", "margn=1"]) == 2
    assert "unknown parameter 'margn' for PairHingeOptions; known: margin" in capsys.readouterr().err


LAYER_MODULE = '''
from caffe_mining.layers import LossLayer
import kit_toy_loss

class PairHingeLossLayer(LossLayer):
    spec = kit_toy_loss.SPEC
'''


def test_a_registered_loss_runs_as_a_python_layer(caffe, registered, tmp_path, monkeypatch):
    (tmp_path / "kit_toy_layers.py").write_text(LAYER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    n, dim = 8, 3
    problem = gradcheck.make_problem("PairHingeLoss", toy.PairHingeOptions(0.8), 0.5, True, n)
    target = gradcheck.PycaffeTarget(problem, {"a": (n, dim), "b": (n, dim), "label": (n,)}, engine="python",
                                     python_layer="kit_toy_layers.PairHingeLossLayer")
    report = gradcheck.check(problem, target, n, dim, seed=3)
    assert report.passed, report.format()
    with pytest.raises(ValueError, match=r"PairHingeLossLayer takes 3 bottoms \(a, b, label\). Got: 2"):
        gradcheck.PycaffeTarget(problem, {"a": (n, dim), "b": (n, dim)}, engine="python",
                                python_layer="kit_toy_layers.PairHingeLossLayer")


def test_the_toy_core_agrees_with_its_reference():
    rng = np.random.default_rng(0)
    x = toy.draw_inputs(toy.PairHingeOptions(), 12, 4, rng)
    core, ref = toy.pair_hinge_loss(x["a"], x["b"], x["label"]), toy.pair_hinge_reference(x["a"], x["b"], x["label"])
    assert core.loss == pytest.approx(ref.loss, rel=1e-12)
    np.testing.assert_allclose(core.grad_a, ref.grad_a, rtol=1e-12, atol=1e-15)
    assert ref.hinge_open.any() and (~ref.hinge_open & (x["label"] == 0)).any()  # both sides of the hinge occur
