"""Nets for `caffe time` (the GPU machine has no pycaffe): random inputs from DummyData layers feeding several loss
layers side by side, so one `caffe time -gpu 0` run times each layer's forward and backward pass; and the parser
of its per-layer lines.

  python -m benchmarks.caffe_time_nets --out DIR [--hardnet-sizes ...] [--contrastive-sizes ...] [--dim 128]

writes DIR/hardnet_N<n>.prototxt (HardNetLoss MIN, MIN + anchor_swap, RANDOM, AVERAGE) and
DIR/contrastive_N<n>.prototxt (MiningContrastiveLoss r=1 and r=4, Caffe's ContrastiveLoss), and prints their paths.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Dict, Tuple

HARDNET_LAYERS = {  # layer name: hardnet_loss_param
    "hardnet_min": "batch_reduce: MIN",
    "hardnet_min_swap": "batch_reduce: MIN anchor_swap: true",
    "hardnet_random": "batch_reduce: RANDOM",
    "hardnet_average": "batch_reduce: AVERAGE",
}
CONTRASTIVE_LAYERS = {  # layer name: (type, contrastive_loss_param)
    "mining_r1": ("MiningContrastiveLoss", "margin: 1 mining_ratio: 1"),
    "mining_r4": ("MiningContrastiveLoss", "margin: 1 mining_ratio: 4"),
    "caffe_contrastive": ("ContrastiveLoss", "margin: 1"),
}


def _dummy(name: str, shape, filler: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "DummyData" top: "{name}" '
            f'dummy_data_param {{ shape {{ {dims} }} data_filler {{ {filler} }} }} }}\n')


def hardnet_net(n: int, dim: int) -> str:
    """Unit-scale anchors, positives = anchors + noise (distance ~0.6 as in benchmarks/inputs.py), four losses."""
    std = 1 / math.sqrt(dim)
    text = f'name: "hardnet_time_N{n}"\nforce_backward: true\n'
    text += _dummy("anchor", (n, dim), f'type: "gaussian" std: {std:.6g}')
    text += _dummy("noise", (n, dim), f'type: "gaussian" std: {0.45 * std:.6g}')
    text += ('layer { name: "positive" type: "Eltwise" bottom: "anchor" bottom: "noise" top: "positive" '
             'eltwise_param { operation: SUM } }\n')
    for name, param in HARDNET_LAYERS.items():
        text += (f'layer {{ name: "{name}" type: "HardNetLoss" bottom: "anchor" bottom: "positive" top: "{name}" '
                 f'hardnet_loss_param {{ {param} }} }}\n')
    return text


def contrastive_net(n: int, dim: int) -> str:
    """Random pairs at distances around the margin 1; the first half similar, the rest dissimilar (constant
    DummyData halves: `caffe time` runs every layer's backward, and Threshold has none)."""
    std = 1 / math.sqrt(2 * dim)
    text = f'name: "contrastive_time_N{n}"\nforce_backward: true\n'
    text += _dummy("feat", (n, dim), f'type: "gaussian" std: {std:.6g}')
    text += _dummy("feat_p", (n, dim), f'type: "gaussian" std: {std:.6g}')
    text += _dummy("similar", (n // 2, 1, 1, 1), 'type: "constant" value: 1')
    text += _dummy("dissimilar", (n - n // 2, 1, 1, 1), 'type: "constant" value: 0')
    text += ('layer { name: "sim" type: "Concat" bottom: "similar" bottom: "dissimilar" top: "sim" '
             'concat_param { axis: 0 } }\n')
    for name, (layer_type, param) in CONTRASTIVE_LAYERS.items():
        text += (f'layer {{ name: "{name}" type: "{layer_type}" bottom: "feat" bottom: "feat_p" bottom: "sim" '
                 f'top: "{name}" contrastive_loss_param {{ {param} }} }}\n')
    return text


def parse_caffe_time(log: str) -> Dict[str, Tuple[float, float]]:
    """Per layer, the average forward and backward milliseconds that `caffe time` printed."""
    forward = dict(re.findall(r"\]\s+(\S+)\s+forward: ([0-9.eE+-]+) ms\.", log))
    backward = dict(re.findall(r"\]\s+(\S+)\s+backward: ([0-9.eE+-]+) ms\.", log))
    return {name: (float(ms), float(backward.get(name, "nan"))) for name, ms in forward.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hardnet-sizes", type=int, nargs="*", default=[1024, 4096, 16384])
    parser.add_argument("--contrastive-sizes", type=int, nargs="*", default=[65536, 1 << 20])
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for n in args.hardnet_sizes:
        path = args.out / f"hardnet_N{n}.prototxt"
        path.write_text(hardnet_net(n, args.dim))
        print(path)
    for n in args.contrastive_sizes:
        path = args.out / f"contrastive_N{n}.prototxt"
        path.write_text(contrastive_net(n, args.dim))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
