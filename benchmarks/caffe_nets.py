"""Nets holding only Input layers and one loss layer, run through pycaffe (net.forward() then net.backward()).

pycaffe comes from PYTHONPATH (<build>/caffe-src/python of the superbuild); ``import_caffe`` returns None when it
is not there, so the rest of the benchmark still runs.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def import_caffe() -> Optional[object]:
    os.environ.setdefault("GLOG_minloglevel", "2")  # net set-up is logged at length otherwise
    try:
        import caffe
    except ImportError:
        return None
    caffe.set_mode_cpu()
    return caffe


def _input_layer(name: str, shape: Sequence[int]) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def loss_net_text(inputs: Dict[str, Tuple[int, ...]], layer_type: str, params: str = "") -> str:
    """Prototxt of a net whose inputs feed one loss layer; force_backward so the inputs get their diffs."""
    text = 'name: "benchmark"\nforce_backward: true\n'
    text += "".join(_input_layer(name, shape) for name, shape in inputs.items())
    bottoms = " ".join(f'bottom: "{name}"' for name in inputs)
    text += f'layer {{ name: "loss" type: "{layer_type}" {bottoms} top: "loss" {params} }}\n'
    return text


class CaffeLoss:
    """A loss net with its inputs filled; calling it runs one forward and one backward pass and returns the loss."""

    def __init__(self, caffe, layer_type: str, inputs: Dict[str, np.ndarray], params: str = ""):
        shapes = {name: value.shape for name, value in inputs.items()}
        with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as handle:
            handle.write(loss_net_text(shapes, layer_type, params))
            path = handle.name
        try:
            self.net = caffe.Net(path, caffe.TRAIN)
        finally:
            os.unlink(path)
        for name, value in inputs.items():
            self.net.blobs[name].data[...] = value
            self.net.blobs[name].diff[...] = 0  # allocates the gradient buffers up front

    def __call__(self) -> float:
        loss = self.net.forward()["loss"]
        self.net.backward()
        return float(loss)

    def gradient(self, name: str) -> np.ndarray:
        return self.net.blobs[name].diff


def hardnet(caffe, anchor: np.ndarray, positive: np.ndarray, batch_reduce: str = "MIN", anchor_swap: bool = False,
            seed: Optional[int] = None) -> CaffeLoss:
    """HardNetLoss (TRIPLET_MARGIN, margin 1); the defaults are the layer's (MIN, no anchor swap)."""
    params = [] if batch_reduce == "MIN" else [f"batch_reduce: {batch_reduce}"]
    params += ["anchor_swap: true"] if anchor_swap else []
    params += [f"seed: {seed}"] if seed is not None else []
    text = f"hardnet_loss_param {{ {' '.join(params)} }}" if params else ""
    return CaffeLoss(caffe, "HardNetLoss", {"anchor": anchor, "positive": positive}, text)


def contrastive(caffe, feat: np.ndarray, feat_p: np.ndarray, sim: np.ndarray,
                mining_ratio: Optional[int] = None, margin: float = 1.0) -> CaffeLoss:
    """Caffe's ContrastiveLoss (mining_ratio None) or MiningContrastiveLoss with that ratio."""
    inputs = {"feat": feat, "feat_p": feat_p, "sim": sim.reshape(-1, 1, 1, 1)}
    if mining_ratio is None:
        return CaffeLoss(caffe, "ContrastiveLoss", inputs, f"contrastive_loss_param {{ margin: {margin} }}")
    return CaffeLoss(caffe, "MiningContrastiveLoss", inputs,
                     f"contrastive_loss_param {{ margin: {margin} mining_ratio: {mining_ratio} }}")
