"""The command line: ``python -m caffe_mining.gradcheck --help``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from caffe_mining.gradcheck.finite_differences import check
from caffe_mining.gradcheck.problem import SPECS, draw_inputs, make_problem
from caffe_mining.gradcheck.prototxt import layer_from_prototxt, net_bottom_shapes
from caffe_mining.gradcheck.report import CheckReport
from caffe_mining.gradcheck.targets import FunctionTarget, PycaffeTarget, gpu_available
from caffe_mining.options import parse_key_values

__all__ = ["build_parser", "main", "run"]


EXAMPLES = """examples:
  python -m caffe_mining.gradcheck --layer MiningContrastiveLoss --target core --param mining_ratio=2
  python -m caffe_mining.gradcheck --layer HardNetLoss --target caffe --n 8 --dim 4 \\
      --param anchor_swap=true --param batch_reduce=AVERAGE
  python -m caffe_mining.gradcheck --target caffe --prototxt models/hardnet/train.prototxt --layer-name loss

exit status: 0 all checks passed, 1 a check failed, 2 bad usage or the target cannot run.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m caffe_mining.gradcheck", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a loss layer's forward and gradients against the NumPy reference and central finite "
                    "differences (float64 for core/reference, Caffe's float32 for pycaffe targets).",
        epilog=EXAMPLES)
    parser.add_argument("--layer", choices=sorted(SPECS), default="MiningContrastiveLoss",
                        help="loss to check (default: %(default)s; taken from the net with --prototxt)")
    parser.add_argument("--target", choices=["caffe", "python", "core", "reference"], default="core",
                        help="caffe: the C++ layer via pycaffe; python: caffe_mining.layers via pycaffe; "
                             "core: the bindings; reference: the NumPy reference itself (default: %(default)s)")
    parser.add_argument("--n", type=int, default=None, help="pairs in the batch (default 8)")
    parser.add_argument("--dim", type=int, default=None, help="values per feature (default 4)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="layer parameter, repeatable (e.g. mining_ratio=2, batch_reduce=AVERAGE)")
    parser.add_argument("--labels", choices=["yes", "no"], default="yes",
                        help="losses whose label bottom is optional (HardNetLoss): give it (default: %(default)s)")
    parser.add_argument("--loss-weight", type=float, default=1.0, help="the top's loss weight (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="pycaffe targets: Caffe mode")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="core target: the dtype of the inputs (pycaffe targets are float32)")
    parser.add_argument("--python-layer", metavar="MODULE.CLASS", default=None,
                        help="python target: a Python layer class other than caffe_mining.layers'")
    parser.add_argument("--prototxt", help="net holding the loss layer to check (needs --layer-name)")
    parser.add_argument("--layer-name", help="name of the loss layer in --prototxt")
    parser.add_argument("--phase", choices=["train", "test"], default="train",
                        help="phase in which --prototxt is instantiated to read the bottoms' shapes")
    parser.add_argument("--max-fd-coords", type=int, default=256,
                        help="finite differences on at most this many coordinates per bottom (default 256)")
    return parser


def run(args: argparse.Namespace) -> CheckReport:
    layer_param = python_layer = None
    n, dim = args.n, args.dim
    if args.prototxt:
        if not args.layer_name:
            raise ValueError("--prototxt needs --layer-name")
        if not os.path.isfile(args.prototxt):
            raise ValueError(f"--prototxt {args.prototxt}: no such file")
        type_name, options, layer_param, python_layer, weight, bottoms = layer_from_prototxt(args.prototxt,
                                                                                               args.layer_name)
        if args.param:
            raise ValueError("--param cannot change a layer taken from --prototxt")
        if weight == 0:
            print(f"warning: layer {args.layer_name!r} has loss_weight 0 in {args.prototxt}: it sends no gradient; "
                  "checking it with loss_weight 1")
            weight = 1.0
        if n is None or dim is None:
            shapes = net_bottom_shapes(args.prototxt, bottoms, args.phase)
            n = shapes[0][0] if n is None else n
            dim = int(np.prod(shapes[0][1:])) if dim is None else dim
        has_labels = len(bottoms) > len(SPECS[type_name].differentiable)
        if args.target in ("caffe", "python"):  # the layer as the net has it, C++ or Python
            args.target = "python" if python_layer else "caffe"
        else:  # its parameters and shapes, on the core or the reference
            layer_param = python_layer = None
        loss_weight = weight
    else:
        type_name = args.layer
        options = parse_key_values(args.param, SPECS[type_name].options_class)
        has_labels = args.labels == "yes"
        loss_weight = args.loss_weight
    n, dim = 8 if n is None else n, 4 if dim is None else dim
    if n < 1 or dim < 1:
        raise ValueError(f"--n and --dim must be >= 1. Got: {n}, {dim}")
    problem = make_problem(type_name, options, loss_weight, has_labels, n, args.seed)
    if args.device == "gpu" and args.target in ("core", "reference"):
        raise ValueError("--device gpu needs a pycaffe target (caffe or python); core and reference run on the CPU")
    if args.target == "reference":
        target = FunctionTarget(problem, problem.spec.reference_fn, "float64", "reference")
    elif args.target == "core":
        target = FunctionTarget(problem, problem.spec.core_fn, args.dtype, "core (bindings)")
    else:
        if args.device == "gpu" and not gpu_available():
            raise RuntimeError("--device gpu: this pycaffe cannot use GPU 0 (CPU-only build or no device)")
        # Caffe answers a size or parameter its layer rejects with a glog abort (exit 134, no message for the
        # CLI to report): ask the core first, whose checks are the layers' own, and stop on its message.
        FunctionTarget(problem, problem.spec.core_fn).evaluate(
            draw_inputs(problem, n, dim, np.random.default_rng(args.seed), "float64"), backward=False)
        shapes = {b: (n, dim) for b in problem.spec.differentiable}
        if has_labels:
            shapes[problem.spec.label_bottom] = (n,)
        target = PycaffeTarget(problem, shapes, args.target, args.device,
                               python_layer or args.python_layer, layer_param)
    return check(problem, target, n, dim, args.seed, max_fd_coords=args.max_fd_coords)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"gradcheck: error: {error}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.passed else 1
