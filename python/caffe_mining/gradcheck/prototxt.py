"""Reading the loss layer of a real net (prototxt): its type, options, wiring and bottom shapes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, Sequence, Tuple

from caffe_mining.gradcheck.problem import SPECS
from caffe_mining.gradcheck.targets import import_caffe
from caffe_mining.options import parse_param_str

__all__ = ["layer_from_prototxt", "net_bottom_shapes"]


def layer_from_prototxt(path: str, layer_name: str):
    """(layer type name, options, LayerParameter text without bottoms/tops/loss weights, python layer, weight,
    bottom names) of the loss layer ``layer_name`` in the net ``path``."""
    import_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), net)
    matches = [layer for layer in net.layer if layer.name == layer_name]
    if not matches:
        raise ValueError(f"no layer named {layer_name!r} in {path}; layers: {', '.join(l.name for l in net.layer)}")
    layer = matches[0]
    python_layer = None

    if layer.type in SPECS:
        options = SPECS[layer.type].options_class.from_proto(layer)
    elif layer.type == "Python":
        module, cls = layer.python_param.module, layer.python_param.layer
        python_layer = f"{module}.{cls}"
        type_name = _python_layer_type(module, cls)
        options = parse_param_str(layer.python_param.param_str, SPECS[type_name].options_class)
    else:
        raise ValueError(f"layer {layer_name!r} is a {layer.type}, not {', '.join(SPECS)} or a "
                         "caffe_mining Python layer")
    type_name = layer.type if python_layer is None else _python_layer_type(*python_layer.rsplit(".", 1))
    weight = layer.loss_weight[0] if len(layer.loss_weight) else (1.0 if python_layer is None else 0.0)
    bottoms = list(layer.bottom)
    stripped = caffe_pb2.LayerParameter()
    stripped.CopyFrom(layer)
    for field in ("bottom", "top", "loss_weight", "include", "exclude", "propagate_down"):
        stripped.ClearField(field)
    return type_name, options, text_format.MessageToString(stripped, as_one_line=True), python_layer, weight, bottoms


def _python_layer_type(module: str, cls: str) -> str:
    import importlib

    layer_class = getattr(importlib.import_module(module), cls)
    from caffe_mining import layers

    for type_name, spec in SPECS.items():
        if issubclass(layer_class, getattr(layers, spec.python_layer)):
            return type_name
    raise ValueError(f"Python layer {module}.{cls} is not a caffe_mining loss layer (nor a subclass of one)")


def net_bottom_shapes(path: str, bottoms: Sequence[str], phase: str) -> List[Tuple[int, ...]]:
    """The shapes of ``bottoms`` in the net ``path``, read by instantiating it in a subprocess: a net whose data
    layer cannot open its source makes Caffe abort the whole process."""
    import_caffe()
    script = ("import json, sys, caffe\n"
              "net = caffe.Net(sys.argv[1], caffe.TRAIN if sys.argv[2] == 'train' else caffe.TEST)\n"
              "print(json.dumps([list(net.blobs[b].data.shape) for b in sys.argv[3:]]))\n")
    env = dict(os.environ, GLOG_minloglevel="2")
    result = subprocess.run([sys.executable, "-c", script, path, phase, *bottoms], capture_output=True, text=True,
                            env=env, timeout=600)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        fatal = [line for line in lines if line.startswith("F") or "Error" in line or "error" in line]
        reason = (fatal or lines)[-1 if not fatal else 0]
        raise RuntimeError(f"could not instantiate {path} to read the shapes of {', '.join(bottoms)} ({reason}); "
                           "pass --n and --dim to check the layer with those sizes instead")
    return [tuple(shape) for shape in json.loads(result.stdout.strip().splitlines()[-1])]
