"""caffe_mining.layers (pycaffe Python layers): param_str parsing, behaviour in a net, and agreement with the C++
layers in the same pycaffe."""
import json
import os
import tempfile

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference
from caffe_mining.options import (ContrastiveOptions, HardNetOptions, parse_key_values, parse_param_str)
from caffe_mining.sampling import LayerUniforms

# ---------------------------------------------------------------------------------------------------------------
# param_str (no Caffe needed)


def test_param_str_json_and_dict_literal():
    assert parse_param_str("", ContrastiveOptions) == ContrastiveOptions()
    assert parse_param_str('{"margin": 0.5, "mining_ratio": 4}', ContrastiveOptions) == ContrastiveOptions(0.5, False, 4)
    options = parse_param_str("{'batch_reduce': 'average', 'anchor_swap': True, 'seed': 7}", HardNetOptions)
    assert options.batch_reduce == "AVERAGE" and options.anchor_swap and options.seed == 7


@pytest.mark.parametrize("param_str, options_class, message", [
    ('{"mining_ration": 2}', ContrastiveOptions, "unknown parameter 'mining_ration' .* known: margin, legacy_version"),
    ('{"mining_ratio": "2"}', ContrastiveOptions, "mining_ratio must be an integer. Got: '2'"),
    ('{"mining_ratio": 0}', ContrastiveOptions, "mining_ratio must be >= 1. Got: 0"),
    ('{"legacy_version": 1}', ContrastiveOptions, "legacy_version must be true or false. Got: 1"),
    ('{"margin": "wide"}', ContrastiveOptions, "margin must be a number. Got: 'wide'"),
    ('{"batch_reduce": "MAX"}', HardNetOptions, "batch_reduce must be one of MIN, AVERAGE, RANDOM. Got: 'MAX'"),
    ('{"loss_type": 1}', HardNetOptions, "loss_type must be one of"),
    ('{"eps": 0}', HardNetOptions, "eps must be > 0. Got: 0"),
    ('{"margin": -1}', HardNetOptions, "margin must be >= 0. Got: -1"),
    ('{"seed": -3}', HardNetOptions, r"seed must be in \[0, 2\^32\). Got: -3"),
    ('{"duplicate_threshold": NaN}', HardNetOptions, "duplicate_threshold must be finite"),
    ("[1, 2]", HardNetOptions, "param_str must be a JSON object or a Python dict literal"),
    ("margin=1", HardNetOptions, "param_str must be a JSON object or a Python dict literal. Got: 'margin=1'"),
])
def test_param_str_errors_name_the_key_and_value(param_str, options_class, message):
    with pytest.raises(ValueError, match=message):
        parse_param_str(param_str, options_class)


def test_key_values_of_the_cli():
    assert parse_key_values(["mining_ratio=3", "legacy_version=TRUE", "margin=2"], ContrastiveOptions) == \
        ContrastiveOptions(2, True, 3)
    assert parse_key_values(["batch_reduce=random", "seed=5"], HardNetOptions).batch_reduce == "RANDOM"


def test_proto_text_round_trips_through_the_cli_syntax():
    options = HardNetOptions(margin=0.5, anchor_swap=True, batch_reduce="RANDOM", seed=3)
    text = options.proto_text()
    assert text.startswith("hardnet_loss_param {") and "batch_reduce: RANDOM" in text and "seed: 3" in text
    assert "mining_ratio: 4" in ContrastiveOptions(mining_ratio=4).proto_text()


# ---------------------------------------------------------------------------------------------------------------
# Nets

def input_layers(shapes):
    return "\n".join(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                     f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}'
                     for name, shape in shapes.items())


def python_layer(cls, bottoms, tops, params, loss_weight=1.0):
    wiring = " ".join([f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops])
    weights = " ".join(f"loss_weight: {w}" for w in [loss_weight, 0][:len(tops)])
    return (f'layer {{ name: "loss" type: "Python" {wiring} {weights} python_param {{ module: "caffe_mining.layers" '
            f"layer: \"{cls}\" param_str: '{json.dumps(params)}' }} }}")


def cpp_layer(type_name, bottoms, tops, param_text, loss_weight=1.0):
    wiring = " ".join([f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops])
    weights = " ".join(f"loss_weight: {w}" for w in [loss_weight, 0][:len(tops)])
    return f'layer {{ name: "loss" type: "{type_name}" {wiring} {weights} {param_text} }}'


def make_net(caffe, shapes, layer_text):
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write('name: "test" force_backward: true\n' + input_layers(shapes) + "\n" + layer_text + "\n")
    try:
        return caffe.Net(f.name, caffe.TRAIN)
    finally:
        os.unlink(f.name)


def run_net(net, inputs, backward=True):
    for name, value in inputs.items():
        net.blobs[name].data[...] = value.reshape(net.blobs[name].data.shape)
    net.forward()
    if backward:
        net.backward()
    return float(net.blobs["loss"].data)


def contrastive_inputs(rng, n=8, dim=4):
    scale = 0.8 / np.sqrt(2 * dim)
    return {"feat": (rng.normal(size=(n, dim)) * scale).astype(np.float32),
            "feat_p": (rng.normal(size=(n, dim)) * scale).astype(np.float32),
            "sim": rng.permutation(np.arange(n) % 2).astype(np.float32)}


def hardnet_inputs(rng, n=8, dim=4, labels=True):
    anchor = rng.normal(size=(n, dim)) / np.sqrt(dim)
    inputs = {"anchor": anchor.astype(np.float32),
              "positive": (anchor + 0.4 * rng.normal(size=(n, dim)) / np.sqrt(dim)).astype(np.float32)}
    if labels:
        inputs["label"] = rng.integers(0, n // 2, size=n).astype(np.float32)
    return inputs


def shapes_of(inputs):
    return {name: value.shape for name, value in inputs.items()}


def test_contrastive_python_layer_matches_the_core(caffe, rng):
    inputs = contrastive_inputs(rng)
    net = make_net(caffe, shapes_of(inputs), python_layer("MiningContrastiveLossLayer", list(inputs), ["loss"],
                                                          {"mining_ratio": 2, "margin": 0.9}, loss_weight=0.5))
    loss = run_net(net, inputs)
    core = caffe_mining.mining_contrastive_loss(inputs["feat"], inputs["feat_p"], inputs["sim"], margin=0.9,
                                                mining_ratio=2, loss_weight=0.5)
    assert loss == np.float32(core.loss)
    np.testing.assert_array_equal(net.blobs["feat"].diff, core.grad_feat)  # the same float32 core, bit for bit
    np.testing.assert_array_equal(net.blobs["feat_p"].diff, core.grad_feat_p)
    ref = reference.mining_contrastive_loss(*(inputs[k].astype(np.float64) for k in ("feat", "feat_p", "sim")),
                                            margin=0.9, mining_ratio=2, loss_weight=0.5)
    assert loss == pytest.approx(ref.loss, rel=1e-6)
    np.testing.assert_allclose(net.blobs["feat"].diff, ref.grad_feat, rtol=1e-5, atol=1e-7)
    assert not net.blobs["sim"].diff.any()  # force_backward asks for it: the labels get zero


def test_hardnet_python_layer_matches_the_core(caffe, rng):
    inputs = hardnet_inputs(rng)
    params = {"anchor_swap": True, "batch_reduce": "AVERAGE", "loss_type": "SOFTMAX"}
    net = make_net(caffe, shapes_of(inputs), python_layer("HardNetLossLayer", list(inputs), ["loss", "negatives"],
                                                          params, loss_weight=2.0))
    loss = run_net(net, inputs)
    core = caffe_mining.hardnet_loss(inputs["anchor"], inputs["positive"], inputs["label"], loss_weight=2.0,
                                     **{k.lower(): v for k, v in params.items()})
    assert loss == np.float32(core.loss)
    np.testing.assert_array_equal(net.blobs["anchor"].diff, core.grad_anchor)
    np.testing.assert_array_equal(net.blobs["positive"].diff, core.grad_positive)
    np.testing.assert_array_equal(net.blobs["negatives"].data[:, 0], core.neg_index)
    np.testing.assert_array_equal(net.blobs["negatives"].data[:, 1], core.neg_swapped)


def test_python_layer_follows_a_changing_batch_size(caffe, rng):
    inputs = contrastive_inputs(rng, n=8)
    net = make_net(caffe, shapes_of(inputs), python_layer("MiningContrastiveLossLayer", list(inputs), ["loss"],
                                                          {"mining_ratio": 2}))
    run_net(net, inputs)
    smaller = contrastive_inputs(rng, n=5)
    for name, value in smaller.items():
        net.blobs[name].reshape(*value.shape)
    net.reshape()
    loss = run_net(net, smaller)
    ref = reference.mining_contrastive_loss(smaller["feat"], smaller["feat_p"], smaller["sim"], mining_ratio=2)
    assert loss == pytest.approx(ref.loss, rel=1e-6)  # K = 2 of 5 now
    assert net.blobs["feat"].diff.shape == (5, 4)


def test_python_layer_random_reproduces_the_layer_draws(caffe, rng):
    inputs = hardnet_inputs(rng, labels=False)
    net = make_net(caffe, shapes_of(inputs), python_layer("HardNetLossLayer", list(inputs), ["loss", "negatives"],
                                                          {"batch_reduce": "RANDOM", "seed": 11}))
    draws = LayerUniforms(11)
    for _ in range(3):  # every forward pass takes the next N draws
        run_net(net, inputs, backward=False)
        expected = reference.hardnet_loss(inputs["anchor"], inputs["positive"], batch_reduce="RANDOM",
                                          uniforms=draws.next(8))
        np.testing.assert_array_equal(net.blobs["negatives"].data[:, 0], expected.neg_index)


@pytest.mark.parametrize("layer_text, error", [
    (python_layer("MiningContrastiveLossLayer", ["feat", "feat_p", "sim"], ["loss"], {"mining_ration": 2}),
     "unknown parameter 'mining_ration'"),
    (python_layer("MiningContrastiveLossLayer", ["feat", "feat_p"], ["loss"], {}), "takes 3 bottoms"),
    (python_layer("MiningContrastiveLossLayer", ["feat", "feat_p", "label"], ["loss"], {}),
     r"sim must hold N = 4 values \(one per pair\)"),
    (python_layer("MiningContrastiveLossLayer", ["feat", "wide", "sim"], ["loss"], {}),
     r"feat_p must have the shape of feat \(4, 3\)"),
    (python_layer("HardNetLossLayer", ["one", "one"], ["loss"], {}), "N >= 2 pairs"),
    (python_layer("HardNetLossLayer", ["feat", "feat_p"], ["loss"], {"batch_reduce": "MAX"}),
     "batch_reduce must be one of"),
])
def test_python_layer_refuses_bad_set_up(caffe, layer_text, error):
    shapes = {"feat": (4, 3), "feat_p": (4, 3), "sim": (4,), "label": (3,), "wide": (4, 5), "one": (1, 3)}
    with pytest.raises(ValueError, match=error):
        make_net(caffe, shapes, layer_text)


# ---------------------------------------------------------------------------------------------------------------
# Python layers against the C++ layers, in the same pycaffe

CONTRASTIVE_CASES = [{"margin": 1.0, "mining_ratio": 1}, {"margin": 0.8, "mining_ratio": 3},
                     {"legacy_version": True, "mining_ratio": 2}, {"mining_ratio": 9}]
HARDNET_CASES = [({}, True), ({"anchor_swap": True}, False), ({"batch_reduce": "AVERAGE", "anchor_swap": True}, True),
                 ({"batch_reduce": "RANDOM", "seed": 5, "anchor_swap": True}, True),
                 ({"loss_type": "SOFTMAX", "margin": 0.5}, False), ({"loss_type": "CONTRASTIVE"}, True),
                 ({"batch_reduce": "AVERAGE", "loss_type": "CONTRASTIVE"}, False)]


@pytest.mark.parametrize("params", CONTRASTIVE_CASES, ids=lambda p: json.dumps(p))
def test_contrastive_python_layer_equals_cpp_layer(caffe_with_layers, rng, params):
    inputs = contrastive_inputs(rng)
    options = ContrastiveOptions(**params)
    py_net = make_net(caffe_with_layers, shapes_of(inputs),
                      python_layer("MiningContrastiveLossLayer", list(inputs), ["loss"], params, loss_weight=0.7))
    cpp_net = make_net(caffe_with_layers, shapes_of(inputs),
                       cpp_layer("MiningContrastiveLoss", list(inputs), ["loss"], options.proto_text(), 0.7))
    for batch in (inputs, contrastive_inputs(rng)):
        assert run_net(py_net, batch) == run_net(cpp_net, batch)
        for name in ("feat", "feat_p"):
            np.testing.assert_array_equal(py_net.blobs[name].diff, cpp_net.blobs[name].diff)


@pytest.mark.parametrize("params, labels", HARDNET_CASES, ids=lambda p: json.dumps(p))
def test_hardnet_python_layer_equals_cpp_layer(caffe_with_layers, rng, params, labels):
    inputs = hardnet_inputs(rng, labels=labels)
    options = HardNetOptions(**params)
    tops = ["loss", "negatives"]
    py_net = make_net(caffe_with_layers, shapes_of(inputs),
                      python_layer("HardNetLossLayer", list(inputs), tops, params, loss_weight=1.5))
    cpp_net = make_net(caffe_with_layers, shapes_of(inputs),
                       cpp_layer("HardNetLoss", list(inputs), tops, options.proto_text(), 1.5))
    for batch in (inputs, hardnet_inputs(rng, labels=labels), inputs):  # RANDOM: a new draw each pass
        # The same float32 core on the same data (and, with a seed, the same draws): identical results.
        assert run_net(py_net, batch) == run_net(cpp_net, batch)
        np.testing.assert_array_equal(py_net.blobs["negatives"].data, cpp_net.blobs["negatives"].data)
        for name in ("anchor", "positive"):
            np.testing.assert_array_equal(py_net.blobs[name].diff, cpp_net.blobs[name].diff)
