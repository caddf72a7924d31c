"""Gradient check of a loss layer against the NumPy reference and central finite differences.

A *target* computes the loss and its gradients: the C++ layer through pycaffe (``caffe``), the Python layer
through pycaffe (``python``), the bindings (``core``) or the reference itself (``reference``). For random inputs
the check compares

1. the target's loss with the reference's (forward), and the target's mining decisions where it reports them;
2. the target's gradient of every differentiable bottom with the reference's gradient;
3. the target's gradient with central finite differences of the target's own loss.

Mining and hinges make the losses piecewise smooth. Before a finite difference is trusted the reference says
which smooth piece the loss is on at x - h, x and x + h (picked pairs, chosen negatives, open hinges); when a step
crosses a kink or flips a decision it is retried with a smaller step, and a coordinate where every step crosses
is left out and counted. Base points where the float64 reference and a float32 target could decide differently
(a near tie) are redrawn.

Tolerances live in the package's one table, :data:`caffe_mining.tolerances.TOLERANCES` (also ``TOLERANCES``
here), by dtype: float64 for the reference and the core, float32 for pycaffe (Caffe's Dtype) and the core on
float32 inputs. Per-loss behaviour comes from each loss's spec (:mod:`caffe_mining.losses`). The modules: problem
(the loss, options, inputs), targets, finite_differences (the check), report, prototxt, cli.
Run ``python -m caffe_mining.gradcheck --help``.
"""
from caffe_mining.gradcheck.cli import build_parser, main, run
from caffe_mining.gradcheck.finite_differences import check
from caffe_mining.gradcheck.problem import SPECS, Problem, draw_inputs, make_problem
from caffe_mining.gradcheck.prototxt import layer_from_prototxt
from caffe_mining.gradcheck.report import CheckReport, Row
from caffe_mining.gradcheck.targets import Evaluation, FunctionTarget, PycaffeTarget, gpu_available
from caffe_mining.tolerances import TOLERANCES, DtypeTolerances, Tolerance

__all__ = [
    "SPECS",
    "TOLERANCES",
    "CheckReport",
    "DtypeTolerances",
    "Evaluation",
    "FunctionTarget",
    "Problem",
    "PycaffeTarget",
    "Row",
    "Tolerance",
    "build_parser",
    "check",
    "draw_inputs",
    "gpu_available",
    "layer_from_prototxt",
    "main",
    "make_problem",
    "run",
]
