"""The Caffe layers' side of issue 11 (bad input): the messages a user sees from `caffe train` for bad parameters,
labels and sizes (glog CHECK failures, so each runs in its own process), and the NaN a diverged batch gives.

test_bad_input.py checks the same rules on the core through the bindings.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_python_layers import cpp_layer, input_layers, make_net, run_net

PROBE = textwrap.dedent("""
    import sys, numpy as np, caffe
    net = caffe.Net(sys.argv[1], caffe.TRAIN)
    for name in net.inputs:
        net.blobs[name].data[...] = np.float32(sys.argv[2])
    net.forward()
    print("FORWARD-DONE", float(net.blobs["loss"].data))
""")


def run_layer(tmp_path, shapes, layer_text, fill="0.5"):
    """Builds and runs a net in a subprocess (a CHECK failure aborts the process): its exit code and output."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('name: "bad" force_backward: true\n' + input_layers(shapes) + "\n" + layer_text + "\n")
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    done = subprocess.run([sys.executable, "-c", PROBE, str(prototxt), fill], capture_output=True, text=True,
                          env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


PAIRS = {"a": (4, 3), "p": (4, 3)}
CONTRASTIVE = {"a": (4, 3), "p": (4, 3), "sim": (4,)}


@pytest.mark.parametrize("param, message", [
    ("margin: inf", "hardnet_loss_param.margin must be finite. Got: inf"),
    ("margin: -1", "hardnet_loss_param.margin must be >= 0. Got: -1"),
    ("eps: inf", "hardnet_loss_param.eps must be finite. Got: inf"),
    ("eps: 1e-50", "hardnet_loss_param.eps must be > 0. Got: 0"),  # the proto's float already holds 0
    ("duplicate_threshold: inf", "hardnet_loss_param.duplicate_threshold must be finite. Got: inf"),
    ("duplicate_threshold: nan", "hardnet_loss_param.duplicate_threshold must be finite. Got: nan"),
])
def test_hardnet_layer_refuses_bad_parameters(caffe_with_layers, tmp_path, param, message):
    code, output = run_layer(tmp_path, PAIRS, cpp_layer("HardNetLoss", ["a", "p"], ["loss"],
                                                         f"hardnet_loss_param {{ {param} }}"))
    assert code != 0 and message in output, output[-2000:]


@pytest.mark.parametrize("param, message", [
    ("margin: nan", "contrastive_loss_param.margin must be finite. Got: nan"),
    ("margin: inf", "contrastive_loss_param.margin must be finite. Got: inf"),
    ("mining_ratio: 0", "contrastive_loss_param.mining_ratio must be >= 1. Got: 0"),
])
def test_contrastive_layer_refuses_bad_parameters(caffe_with_layers, tmp_path, param, message):
    code, output = run_layer(tmp_path, CONTRASTIVE, cpp_layer("MiningContrastiveLoss", ["a", "p", "sim"], ["loss"],
                                                               f"contrastive_loss_param {{ {param} }}"))
    assert code != 0 and message in output, output[-2000:]


def test_hardnet_layer_refuses_nan_labels(caffe_with_layers, tmp_path):
    code, output = run_layer(tmp_path, {"a": (4, 3), "p": (4, 3), "label": (4,)},
                             cpp_layer("HardNetLoss", ["a", "p", "label"], ["loss"], ""), fill="nan")
    assert code != 0 and "label (bottom[2]) must hold finite class ids, got nan at index 0" in output, output[-2000:]


@pytest.mark.parametrize("reduce, n, largest", [("MIN", 46341, 46340), ("RANDOM", 46341, 46340),
                                                ("AVERAGE", 46340, 46339)])
def test_hardnet_layer_names_the_largest_batch(caffe_with_layers, tmp_path, reduce, n, largest):
    """Used to abort in Blob::Reshape on an int overflow (shape -2147479016) with no word of the layer."""
    code, output = run_layer(tmp_path, {"a": (n, 1), "p": (n, 1)},
                             cpp_layer("HardNetLoss", ["a", "p"], ["loss"], f"hardnet_loss_param {{ batch_reduce: {reduce} }}"))
    assert code != 0 and f"supports at most N = {largest}" in output, output[-2000:]


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_contrastive_layer_names_empty_batches(caffe_with_layers, tmp_path, shape):
    """N = 0 or D = 0 used to abort in blob.cpp (Check failed: data_) without naming the layer."""
    code, output = run_layer(tmp_path, {"a": shape, "p": shape, "sim": (shape[0],)},
                             cpp_layer("MiningContrastiveLoss", ["a", "p", "sim"], ["loss"], ""))
    assert code != 0 and "needs N >= 1 pairs of D >= 1 values" in output, output[-2000:]


HARDNET_IO = {"a": (5, 3), "p": (5, 3)}
CONTRASTIVE_IO = {"a": (5, 3), "p": (5, 3), "sim": (5,)}


@pytest.mark.parametrize("layer, inputs, block", [
    ("HardNetLoss", HARDNET_IO, "hardnet_loss_param { }"),
    ("HardNetLoss", HARDNET_IO, "hardnet_loss_param { anchor_swap: true batch_reduce: AVERAGE }"),
    ("HardNetLoss", HARDNET_IO, "hardnet_loss_param { batch_reduce: RANDOM seed: 3 }"),
    ("MiningContrastiveLoss", CONTRASTIVE_IO, "contrastive_loss_param { }"),
    ("MiningContrastiveLoss", CONTRASTIVE_IO, "contrastive_loss_param { mining_ratio: 5 }"),
])
def test_layers_give_nan_for_a_nan_feature(caffe_with_layers, rng, layer, inputs, block):
    net = make_net(caffe_with_layers, inputs, cpp_layer(layer, list(inputs), ["loss"], block))
    values = {name: rng.normal(size=shape).astype(np.float32) for name, shape in inputs.items()}
    if "sim" in values:
        values["sim"] = np.array([1, 0, 1, 0, 0], np.float32)
    values["a"][4, 2] = np.nan  # with mining_ratio 5, K = 1: this pair is not the one picked
    loss = run_net(net, values)
    assert np.isnan(loss)
    assert np.isnan(net.blobs["a"].diff).all() and np.isnan(net.blobs["p"].diff).all()
