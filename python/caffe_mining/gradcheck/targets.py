"""Targets: what computes the loss and its gradients (a loss function, or a layer inside a pycaffe net)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from caffe_mining.gradcheck.problem import Problem

__all__ = ["Evaluation", "FunctionTarget", "PycaffeTarget", "gpu_available", "import_caffe"]


class Evaluation(NamedTuple):
    """A target's answer: loss E (unweighted), gradients of loss_weight * E by bottom, decisions if reported."""

    loss: float
    grads: Optional[Dict[str, np.ndarray]]
    decisions: Optional[Tuple[np.ndarray, ...]]


class FunctionTarget:
    """A loss function with the reference's signature: the reference, the bindings, or a planted-bug copy."""

    def __init__(self, problem: Problem, fn: Callable, dtype: str = "float64", name: str = "function") -> None:
        self.problem, self.fn, self.dtype, self.name = problem, fn, dtype, name
        self.device = "cpu"

    def evaluate(self, inputs: Dict[str, np.ndarray], backward: bool = True) -> Evaluation:
        cast = {k: np.asarray(v).astype(self.dtype) for k, v in inputs.items()}
        result = self.problem.call(self.fn, cast, backward=backward)
        grads = None
        if backward:
            grads = {bottom: np.asarray(getattr(result, field), np.float64).reshape(inputs[bottom].shape)
                     for bottom, field in zip(self.problem.spec.differentiable, self.problem.spec.grad_fields)}
        return Evaluation(float(result.loss), grads, self.problem.decisions(result))


def import_caffe():
    # Caffe logs every net set-up at length; keep warnings and errors only unless the user asked otherwise.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe  # noqa: F401 (pycaffe, from PYTHONPATH)
    except ImportError as error:
        raise RuntimeError(f"cannot import pycaffe ({error}); put Caffe's python/ directory on PYTHONPATH") from None
    return caffe


def gpu_available() -> bool:
    """Whether pycaffe can run on GPU 0. Probed in a subprocess: a CPU-only Caffe aborts the process."""
    probe = "import caffe; caffe.set_device(0); caffe.set_mode_gpu()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    return result.returncode == 0


class PycaffeTarget:
    """A loss layer inside a pycaffe net made of Input layers and the loss layer.

    engine 'caffe': the C++ layer (the spec's type_name); 'python': the Python layer
    (``python_layer`` = 'module.Class', default caffe_mining.layers' class). ``layer_param`` (text of a
    LayerParameter, e.g. from a real net) replaces the generated layer; its bottoms and tops are renamed.
    The net is rebuilt before every evaluation of a layer that draws anew at every pass (options.draws_uniforms or
    draws_per_pass),
    so that each evaluation sees the first draws of a freshly seeded layer (the reference's).
    """

    def __init__(self, problem: Problem, shapes: Dict[str, Tuple[int, ...]], engine: str = "caffe",
                 device: str = "cpu", python_layer: Optional[str] = None, layer_param: Optional[str] = None) -> None:
        self.caffe = import_caffe()
        self.problem, self.shapes, self.engine, self.device = problem, shapes, engine, device
        self.dtype = "float32"
        self.name = f"{engine} ({python_layer})" if python_layer else engine
        spec = problem.spec
        if engine == "caffe" and layer_param is None and spec.type_name not in self.caffe.layer_type_list():
            raise RuntimeError(f"this pycaffe has no {spec.type_name} layer: build Caffe with caffe-mining's overlay "
                               f"(pycaffe imported from {os.path.dirname(self.caffe.__file__)})")
        if device == "gpu":
            self.caffe.set_device(0)
            self.caffe.set_mode_gpu()
        else:
            self.caffe.set_mode_cpu()
        self.bottoms = [b for b in (*spec.differentiable, spec.label_bottom) if b in shapes]
        self.with_decisions = spec.decisions_top is not None
        self.prototxt = self._net_text(self._layer_text(python_layer, layer_param))
        handle, self.path = tempfile.mkstemp(suffix=".prototxt", prefix="gradcheck_")
        with os.fdopen(handle, "w") as f:
            f.write(self.prototxt)
        # A layer that draws anew at every pass (per-row uniforms, or the core's own draws keyed by the pass) is
        # rebuilt before every evaluation, so each one sees the draws of pass 0 (the reference's).
        self.fresh_net_each_time = problem.options.draws_uniforms or getattr(problem.options, "draws_per_pass", False)
        self.net = self._new_net()

    def __del__(self) -> None:
        if getattr(self, "path", None) and os.path.exists(self.path):
            os.unlink(self.path)

    def _layer_text(self, python_layer: Optional[str], layer_param: Optional[str]) -> str:
        problem, spec = self.problem, self.problem.spec
        tops = ["loss", spec.decisions_top] if self.with_decisions else ["loss"]
        weights = " ".join(f"loss_weight: {w!r}" for w in [problem.loss_weight, 0.0][:len(tops)])
        wiring = " ".join([f'bottom: "{b}"' for b in self.bottoms] + [f'top: "{t}"' for t in tops])
        if layer_param is not None:
            return f"layer {{ {layer_param} {wiring} {weights} }}"
        if self.engine == "caffe":
            return (f'layer {{ name: "loss" type: "{spec.type_name}" {wiring} {weights} '
                    f"{problem.options.proto_text()} }}")
        module, _, cls = (python_layer or f"caffe_mining.layers.{spec.python_layer}").rpartition(".")
        params = {k: v for k, v in dataclasses.asdict(problem.options).items() if v is not None}
        return (f'layer {{ name: "loss" type: "Python" {wiring} {weights} python_param {{ module: "{module}" '
                f"layer: \"{cls}\" param_str: '{json.dumps(params)}' }} }}")

    def _net_text(self, layer_text: str) -> str:
        inputs = []
        for b in self.bottoms:
            dims = " ".join(f"dim: {d}" for d in self.shapes[b])
            inputs.append(f'layer {{ name: "{b}" type: "Input" top: "{b}" input_param {{ shape {{ {dims} }} }} }}')
        return "\n".join(['name: "gradcheck" force_backward: true', *inputs, layer_text]) + "\n"

    def _new_net(self):
        return self.caffe.Net(self.path, self.caffe.TRAIN)

    def evaluate(self, inputs: Dict[str, np.ndarray], backward: bool = True) -> Evaluation:
        if self.fresh_net_each_time:
            self.net = self._new_net()
        net = self.net
        for b in self.bottoms:
            net.blobs[b].data[...] = inputs[b].reshape(net.blobs[b].data.shape)
        net.forward()
        loss = float(net.blobs["loss"].data)
        decisions = None
        if self.with_decisions:
            decisions = self.problem.spec.decisions_from_top(net.blobs[self.problem.spec.decisions_top].data)
        grads = None
        if backward:
            net.backward()
            grads = {b: net.blobs[b].diff.astype(np.float64).reshape(inputs[b].shape)
                     for b in self.problem.spec.differentiable}
        return Evaluation(loss, grads, decisions)
