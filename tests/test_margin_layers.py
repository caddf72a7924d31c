"""MarginLoss through pycaffe: the C++ layer and the Python layer, pass after pass, against the core (same seed,
same pass number, same triplets), β as the layer's learnable blob (its diff accumulates, the solver moves it)."""
import json

import numpy as np
import pytest

import caffe_mining
from caffe_mining.losses.margin import MarginOptions

N, DIM = 12, 6


def batch():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 3).astype(np.float32)
    x = rng.normal(size=(4, DIM))[labels.astype(int)] + 0.9 * rng.normal(size=(N, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def net_text(layer):
    inputs = "\n".join(f'layer {{ name: "{b}" type: "Input" top: "{b}" input_param {{ shape {{ {dims} }} }} }}'
                       for b, dims in (("embedding", f"dim: {N} dim: {DIM}"), ("label", f"dim: {N}")))
    return f'name: "margin" force_backward: true\n{inputs}\n{layer}\n'


def make_net(caffe, tmp_path, engine, options, name):
    if engine == "caffe":
        layer = (f'layer {{ name: "loss" type: "MarginLoss" bottom: "embedding" bottom: "label" top: "loss" '
                 f'top: "triplets" {options.proto_text()} }}')
    else:
        params = json.dumps({k: v for k, v in options.loss_kwargs().items()})
        layer = (f'layer {{ name: "loss" type: "Python" bottom: "embedding" bottom: "label" top: "loss" '
                 f'top: "triplets" loss_weight: 1 loss_weight: 0 python_param {{ module: "caffe_mining.layers" layer: "MarginLossLayer" '
                 f"param_str: '{params}' }} }}")
    path = tmp_path / f"{name}.prototxt"
    path.write_text(net_text(layer))
    return caffe.Net(str(path), caffe.TRAIN)


@pytest.mark.parametrize("engine", ["caffe", "python"])
@pytest.mark.parametrize("options", [MarginOptions(seed=3, nu=0.1), MarginOptions(num_classes=4, sampler="UNIFORM")],
                         ids=["one-beta", "per-class"])
def test_layer_matches_the_core_pass_after_pass(caffe_with_layers, tmp_path, engine, options):
    caffe = caffe_with_layers
    caffe.set_mode_cpu()
    x, labels = batch()
    net = make_net(caffe, tmp_path, engine, options, engine)
    beta = net.params["loss"][0]
    assert beta.data.tolist() == [np.float32(options.beta_init)] * max(1, options.num_classes)
    beta.data[...] = np.linspace(0.9, 1.3, beta.data.size)
    beta.diff[...] = 0
    net.blobs["embedding"].data[...] = x
    net.blobs["label"].data[...] = labels
    seen = []
    for iteration in range(2):
        net.forward()
        net.backward()
        core = caffe_mining.margin_loss(x, labels, beta.data.copy(), iteration=iteration, **options.loss_kwargs())
        assert float(net.blobs["loss"].data) == pytest.approx(core.loss, rel=1e-6)
        assert net.blobs["triplets"].data.astype(int).tolist() == core.triplets.tolist()  # both layers' top
        np.testing.assert_allclose(net.blobs["embedding"].diff, core.grad_embedding, rtol=1e-5, atol=1e-7)
        seen.append(core)
    # β's diff is the sum of both passes' gradients (Caffe accumulates parameter gradients)
    np.testing.assert_allclose(beta.diff, seen[0].grad_beta + seen[1].grad_beta, rtol=1e-5, atol=1e-7)
    assert seen[0].triplets.tolist() != seen[1].triplets.tolist()
