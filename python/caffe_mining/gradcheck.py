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

Tolerances live in one table, :data:`TOLERANCES`, by dtype: float64 for the reference and the core, float32 for
pycaffe (Caffe's Dtype) and the core on float32 inputs. Run ``python -m caffe_mining.gradcheck --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_mining import functional, reference
from caffe_mining.options import (BATCH_REDUCES, LOSS_TYPES, ContrastiveOptions, HardNetOptions, parse_key_values,
                                  parse_param_str)
from caffe_mining.reference import CAFFE_DIST_GUARD
from caffe_mining.sampling import LayerUniforms

__all__ = [
    "TOLERANCES",
    "CheckReport",
    "Evaluation",
    "FunctionTarget",
    "PycaffeTarget",
    "Problem",
    "check",
    "main",
    "make_problem",
]


class Tolerance(NamedTuple):
    """|target - expected| <= atol + rtol * scale, scale = the largest |expected| of the compared quantity."""

    atol: float
    rtol: float


class DtypeTolerances(NamedTuple):
    reference: Tolerance  # target vs reference, same inputs
    finite_difference: Tolerance  # target's gradient vs central differences of its own loss
    step: float  # first finite-difference step (then step/4, step/16 when a kink is crossed)
    stability: float  # perturbation size for the near-tie test of a base point


#: The one tolerance table, by the target's dtype.
#: reference: the target and the reference compute the same formula on the same inputs, so only rounding differs
#:   (float64 ~1e-15 relative; float32 ~1e-7 per operation, 1e-6..1e-5 after the N x N distance GEMM's cancellation).
#: finite_difference: Richardson-extrapolated central differences (error O(h^4)); each coordinate is further allowed
#:   its own error bound (see _richardson_difference): the truncation estimate |D(h/2) - D(h)| and the target's
#:   rounding of E (6 eps |E| / h: float32's loss top holds E to ~1e-7 relative, so a step of 1e-2 resolves a
#:   gradient to ~1e-4 |E| and smaller steps, taken only next to a kink, less). float32 uses Caffe's
#:   GradientChecker step 1e-2; float64 uses 1e-4 (truncation (h/d)^4 and rounding 1e-16/h both ~1e-12).
TOLERANCES: Dict[str, DtypeTolerances] = {
    "float64": DtypeTolerances(reference=Tolerance(atol=1e-12, rtol=1e-9),
                               finite_difference=Tolerance(atol=1e-10, rtol=1e-7), step=1e-4, stability=1e-9),
    "float32": DtypeTolerances(reference=Tolerance(atol=1e-6, rtol=1e-4),
                               finite_difference=Tolerance(atol=1e-5, rtol=1e-3), step=1e-2, stability=1e-4),
}


# ---------------------------------------------------------------------------------------------------------------
# The two losses, seen uniformly: bottoms, options, how to call a loss function, what its decisions are.

@dataclasses.dataclass(frozen=True)
class LayerSpec:
    type_name: str
    options_class: type
    python_layer: str  # class name in caffe_mining.layers
    differentiable: Tuple[str, str]
    label_bottom: str
    reference_fn: Callable
    core_fn: Callable
    grad_fields: Tuple[str, str]


SPECS = {
    "MiningContrastiveLoss": LayerSpec("MiningContrastiveLoss", ContrastiveOptions, "MiningContrastiveLossLayer",
                                       ("feat", "feat_p"), "sim", reference.mining_contrastive_loss,
                                       functional.mining_contrastive_loss, ("grad_feat", "grad_feat_p")),
    "HardNetLoss": LayerSpec("HardNetLoss", HardNetOptions, "HardNetLossLayer", ("anchor", "positive"), "label",
                             reference.hardnet_loss, functional.hardnet_loss, ("grad_anchor", "grad_positive")),
}


@dataclasses.dataclass
class Problem:
    """What is checked: a layer with its options, the loss weight and the (non-differentiable) label bottom.

    For HardNet RANDOM, ``uniforms`` are the draws of a freshly set-up layer with ``options.seed``.
    """

    spec: LayerSpec
    options: object
    loss_weight: float = 1.0
    has_labels: bool = True  # HardNet: whether the label bottom exists (MiningContrastiveLoss always has sim)
    uniforms: Optional[np.ndarray] = None

    def call(self, fn: Callable, inputs: Dict[str, np.ndarray], backward: bool = True):
        """Calls a loss function with the reference's signature (reference or core) on ``inputs``."""
        o = self.options
        if self.spec.type_name == "MiningContrastiveLoss":
            kwargs = dict(margin=o.margin, legacy_version=o.legacy_version, mining_ratio=o.mining_ratio)
            args = (inputs["feat"], inputs["feat_p"], inputs["sim"])
        else:
            kwargs = dict(margin=o.margin, anchor_swap=o.anchor_swap, batch_reduce=o.batch_reduce,
                          loss_type=o.loss_type, eps=o.eps, duplicate_threshold=o.duplicate_threshold,
                          uniforms=self.uniforms)
            args = (inputs["anchor"], inputs["positive"], inputs.get("label"))
        return fn(*args, loss_weight=self.loss_weight, backward=backward, **kwargs)

    def reference(self, inputs: Dict[str, np.ndarray]):
        return self.call(self.spec.reference_fn, {k: np.asarray(v, np.float64) for k, v in inputs.items()})

    def pieces(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """The reference's description of the smooth piece the loss is on (equal pieces: no kink between)."""
        return self.reference(inputs).pieces

    def decisions(self, result) -> Tuple[np.ndarray, ...]:
        if self.spec.type_name == "MiningContrastiveLoss":
            return (np.asarray(result.picked, bool),)
        return (np.asarray(result.neg_index, np.int64), np.asarray(result.neg_swapped, bool))

    def guard_slack(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        """Per pair, the relative difference between the layer's gradient and the exact derivative of its loss that
        is there by design: MiningContrastiveLoss divides by (d + 1e-4) instead of d (Caffe's guard) for open
        dissimilar pairs, so |exact - layer| = |layer| * 1e-4 / d there. Zero elsewhere and for HardNetLoss."""
        n = next(iter(inputs.values())).shape[0]
        if self.spec.type_name != "MiningContrastiveLoss" or self.options.legacy_version:
            return np.zeros(n)
        diff = np.asarray(inputs["feat"], np.float64) - np.asarray(inputs["feat_p"], np.float64)
        diff = diff.reshape(n, -1)
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        guarded = (np.asarray(inputs["sim"]).reshape(-1) == 0) & (dist < self.options.margin)
        return np.where(guarded, CAFFE_DIST_GUARD / np.maximum(dist, 1e-300), 0.0)


def make_problem(layer: str, options=None, loss_weight: float = 1.0, has_labels: bool = True,
                 n: int = 0, seed: int = 0) -> Problem:
    """A Problem for ``layer`` ('MiningContrastiveLoss' or 'HardNetLoss'); HardNet RANDOM without a seed gets
    ``seed`` as its seed so the check is reproducible."""
    if layer not in SPECS:
        raise ValueError(f"layer must be one of {', '.join(SPECS)}. Got: {layer!r}")
    spec = SPECS[layer]
    options = options if options is not None else spec.options_class()
    problem = Problem(spec, options, loss_weight, has_labels)
    if layer == "HardNetLoss" and options.batch_reduce == "RANDOM":
        if options.seed is None:
            problem.options = dataclasses.replace(options, seed=seed)
        problem.uniforms = LayerUniforms(problem.options.seed).next(n) if n else None
    return problem


def draw_inputs(problem: Problem, n: int, dim: int, rng: np.random.Generator, dtype: str) -> Dict[str, np.ndarray]:
    """Random inputs in the regime where every piece of the loss occurs (open and closed hinges, both kinds of
    pair, valid and masked negatives), rounded to ``dtype`` and held as float64."""
    if problem.spec.type_name == "MiningContrastiveLoss":
        # Distances around the margin: both open and closed dissimilar hinges.
        scale = 0.8 * max(problem.options.margin, 1e-3) / np.sqrt(2 * dim)
        inputs = {"feat": rng.normal(size=(n, dim)) * scale, "feat_p": rng.normal(size=(n, dim)) * scale,
                  "sim": rng.permutation(np.arange(n) % 2).astype(np.float64)}
    else:
        # Positives near their anchors, negatives about one unit away: triplet hinges both open and closed.
        anchor = rng.normal(size=(n, dim)) / np.sqrt(dim)
        inputs = {"anchor": anchor, "positive": anchor + 0.4 * rng.normal(size=(n, dim)) / np.sqrt(dim)}
        if problem.has_labels:
            inputs["label"] = rng.integers(0, max(2, (n + 1) // 2), size=n).astype(np.float64)
    return {k: v.astype(dtype).astype(np.float64) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------------------------
# Targets

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


def _import_caffe():
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

    engine 'caffe': the C++ layer (type MiningContrastiveLoss / HardNetLoss); 'python': the Python layer
    (``python_layer`` = 'module.Class', default caffe_mining.layers' class). ``layer_param`` (text of a
    LayerParameter, e.g. from a real net) replaces the generated layer; its bottoms and tops are renamed.
    The net is rebuilt before every evaluation of a RANDOM HardNet layer, so that each evaluation sees the first
    draws of a freshly seeded layer (the reference's uniforms).
    """

    def __init__(self, problem: Problem, shapes: Dict[str, Tuple[int, ...]], engine: str = "caffe",
                 device: str = "cpu", python_layer: Optional[str] = None, layer_param: Optional[str] = None) -> None:
        self.caffe = _import_caffe()
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
        self.with_decisions = spec.type_name == "HardNetLoss"
        self.prototxt = self._net_text(self._layer_text(python_layer, layer_param))
        handle, self.path = tempfile.mkstemp(suffix=".prototxt", prefix="gradcheck_")
        with os.fdopen(handle, "w") as f:
            f.write(self.prototxt)
        self.fresh_net_each_time = spec.type_name == "HardNetLoss" and problem.options.batch_reduce == "RANDOM"
        self.net = self._new_net()

    def __del__(self) -> None:
        if getattr(self, "path", None) and os.path.exists(self.path):
            os.unlink(self.path)

    def _layer_text(self, python_layer: Optional[str], layer_param: Optional[str]) -> str:
        problem, spec = self.problem, self.problem.spec
        tops = ["loss", "negatives"] if self.with_decisions else ["loss"]
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
            negatives = net.blobs["negatives"].data
            decisions = (negatives[:, 0].astype(np.int64), negatives[:, 1] != 0)
        grads = None
        if backward:
            net.backward()
            grads = {b: net.blobs[b].diff.astype(np.float64).reshape(inputs[b].shape)
                     for b in self.problem.spec.differentiable}
        return Evaluation(loss, grads, decisions)


# ---------------------------------------------------------------------------------------------------------------
# The check

@dataclasses.dataclass
class Row:
    check: str
    bottom: str
    max_abs: float
    max_rel: float
    allowed: float
    passed: bool
    note: str = ""


@dataclasses.dataclass
class CheckReport:
    title: str
    rows: List[Row]
    notes: List[str]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def worst(self, check: str) -> float:
        """Largest max_rel among the rows of one check ('forward', 'reference gradient', 'finite differences')."""
        return max((row.max_rel for row in self.rows if row.check == check), default=0.0)

    def format(self) -> str:
        header = f"{'check':<20} {'bottom':<9} {'max abs err':>12} {'max rel err':>12} {'allowed abs':>12}  result"
        lines = [self.title, header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r.check:<20} {r.bottom:<9} {r.max_abs:>12.3e} {r.max_rel:>12.3e} {r.allowed:>12.3e}  "
                         f"{'pass' if r.passed else 'FAIL'}{'  ' + r.note if r.note else ''}")
        lines += self.notes
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _compare(check: str, bottom: str, got: np.ndarray, expected: np.ndarray, tol: Tolerance,
             extra: Optional[np.ndarray] = None, note: str = "") -> Row:
    """Compares elementwise: |got - expected| <= atol + rtol * max|expected| (+ extra, a per-element allowance)."""
    got, expected = np.asarray(got, np.float64).ravel(), np.asarray(expected, np.float64).ravel()
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    error = np.abs(got - expected)
    error[~np.isfinite(got) | ~np.isfinite(expected)] = np.inf
    allowed = tol.atol + tol.rtol * scale + (0.0 if extra is None else np.asarray(extra, np.float64).ravel())
    max_abs = float(np.max(error)) if error.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Row(check, bottom, max_abs, max_rel, float(np.max(allowed)) if np.size(allowed) else tol.atol,
               bool(np.all(error <= allowed)), note)


def _same_pieces(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _stable(problem: Problem, inputs: Dict[str, np.ndarray], size: float, rng: np.random.Generator) -> bool:
    """No decision or kink within ``size`` (relative) of the base point along a few random directions."""
    base = problem.pieces(inputs)
    for _ in range(3):
        direction = {k: (rng.normal(size=v.shape) * size * max(1.0, float(np.max(np.abs(v))))
                         if k in problem.spec.differentiable else 0.0) for k, v in inputs.items()}
        for sign in (1.0, -1.0):
            moved = {k: v + sign * direction[k] for k, v in inputs.items()}
            if not np.array_equal(problem.pieces(moved), base):
                return False
    return True


def _richardson_difference(problem: Problem, target, x: Dict[str, np.ndarray], bottom: str, k: int, h: float,
                           base_pieces: np.ndarray, base_decisions) -> Optional[Tuple[float, float]]:
    """d(loss_weight * E)/dx_k by central differences at steps h and h/2 combined by Richardson extrapolation,
    (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4) instead of O(h^2) (float32 needs a large h), and a bound
    of its error: |D(h/2) - D(h)| (truncation, with a safety factor of about 3) plus 6 eps |E| / h (the target's
    rounding of E, a few units in its last place, through the combination: (4 * 2 + 1) / 3 = 3 rounding errors of
    2 eps |E| each, over h). None when a point lies on another smooth piece than x (per the reference) or the target
    decides differently there."""
    estimates, magnitude = [], 0.0
    for step in (h, h / 2):
        points = []
        for sign in (1.0, -1.0):
            moved = dict(x)
            flat = x[bottom].copy().reshape(-1)
            flat[k] += sign * step
            # The point as the target's dtype represents it (the step actually taken).
            moved[bottom] = flat.astype(target.dtype).astype(np.float64).reshape(x[bottom].shape)
            if not np.array_equal(problem.pieces(moved), base_pieces):
                return None
            evaluation = target.evaluate(moved, backward=False)
            if base_decisions is not None and not _same_pieces(evaluation.decisions, base_decisions):
                return None
            points.append((moved[bottom].reshape(-1)[k], evaluation.loss))
            magnitude = max(magnitude, abs(evaluation.loss))
        (x_plus, e_plus), (x_minus, e_minus) = points
        estimates.append(problem.loss_weight * (e_plus - e_minus) / (x_plus - x_minus))
    rounding = 6.0 * float(np.finfo(target.dtype).eps) * magnitude * abs(problem.loss_weight) / h
    return (4.0 * estimates[1] - estimates[0]) / 3.0, abs(estimates[1] - estimates[0]) + rounding


def check(problem: Problem, target, n: int, dim: int, seed: int = 0,
          inputs: Optional[Dict[str, np.ndarray]] = None, max_fd_coords: int = 256,
          max_redraws: int = 20) -> CheckReport:
    """Checks ``target`` (FunctionTarget or PycaffeTarget) on random inputs of n pairs of dim values.

    Returns a CheckReport; ``report.passed`` says whether every comparison is within TOLERANCES[target.dtype].
    """
    rng = np.random.default_rng(seed)
    tols = TOLERANCES[target.dtype]
    notes: List[str] = []
    if problem.uniforms is None and problem.spec.type_name == "HardNetLoss" \
            and problem.options.batch_reduce == "RANDOM":
        problem.uniforms = LayerUniforms(problem.options.seed).next(n)

    # 1. A base point away from near ties, where the target decides as the reference does.
    redraws = 0
    while True:
        x = inputs if inputs is not None else draw_inputs(problem, n, dim, rng, target.dtype)
        base = target.evaluate(x)
        ref = problem.reference(x)
        agrees = base.decisions is None or _same_pieces(base.decisions, problem.decisions(ref))
        if inputs is not None or redraws >= max_redraws or (agrees and _stable(problem, x, tols.stability, rng)):
            break
        redraws += 1
    if redraws:
        notes.append(f"note: base point redrawn {redraws} time(s) (near tie or kink)")

    rows = [_compare("forward", "loss", base.loss, ref.loss, tols.reference)]
    if base.decisions is not None:
        mismatched = sum(int(np.sum(a != b)) for a, b in zip(base.decisions, problem.decisions(ref)))
        rows.append(Row("decisions", "-", float(mismatched), 0.0 if not mismatched else 1.0, 0.0, mismatched == 0,
                        "" if not mismatched else f"{mismatched} differ from the reference"))
    ref_grads = {b: np.asarray(getattr(ref, f), np.float64).reshape(x[b].shape)
                 for b, f in zip(problem.spec.differentiable, problem.spec.grad_fields)}
    for b in problem.spec.differentiable:
        rows.append(_compare("reference gradient", b, base.grads[b], ref_grads[b], tols.reference))

    # 2. Central differences of the target's own loss, stepping only within a smooth piece.
    slack = problem.guard_slack(x)  # per pair
    if np.any(slack):
        notes.append(f"note: finite differences allow |gradient| * 1e-4 / d more on open dissimilar pairs (up to "
                     f"{np.max(slack):.1e} relative): the layer's (m - d)/(d + 1e-4) is Caffe's guarded gradient")
    base_pieces = problem.pieces(x)
    for b in problem.spec.differentiable:
        size = x[b].size
        coords = np.arange(size) if size <= max_fd_coords else np.sort(rng.choice(size, max_fd_coords, False))
        fd, fd_error, used, retried, skipped = [], [], [], 0, 0
        for k in coords:
            for attempt, h in enumerate((tols.step, tols.step / 4, tols.step / 16)):
                estimate = _richardson_difference(problem, target, x, b, int(k), h, base_pieces, base.decisions)
                if estimate is None:
                    continue  # a kink or a decision between x - h and x + h
                fd.append(estimate[0])
                fd_error.append(estimate[1])
                used.append(k)
                retried += attempt > 0
                break
            else:
                skipped += 1
        note = f"{len(used)}/{size} coords"
        note += f", {retried} with a smaller step" if retried else ""
        note += f", {skipped} left out (kink)" if skipped else ""
        if not used:
            rows.append(Row("finite differences", b, float("nan"), float("nan"), 0.0, False,
                            note + ": no coordinate left to check"))
            continue
        used = np.array(used)
        got = base.grads[b].reshape(-1)[used]
        allowance = np.abs(got) * slack[used // (size // n)] + np.array(fd_error)
        rows.append(_compare("finite differences", b, got, np.array(fd), tols.finite_difference, allowance, note))

    o = problem.options
    described = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(o).items() if v is not None)
    title = (f"gradcheck {problem.spec.type_name} [{described}] loss_weight={problem.loss_weight}\n"
             f"target: {target.name} ({target.dtype}, {target.device})  n={n} dim={dim} seed={seed}")
    return CheckReport(title, rows, notes)


# ---------------------------------------------------------------------------------------------------------------
# Checking a loss layer of a real net

def layer_from_prototxt(path: str, layer_name: str):
    """(layer type name, options, LayerParameter text without bottoms/tops/loss weights, python layer, weight,
    bottom names) of the loss layer ``layer_name`` in the net ``path``."""
    _import_caffe()
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

    def decimal(value: float) -> float:  # a proto float (float32) as the decimal it was written as
        return float(f"{value:.7g}")

    if layer.type == "MiningContrastiveLoss":
        p = layer.contrastive_loss_param
        options = ContrastiveOptions(decimal(p.margin), bool(p.legacy_version), int(p.mining_ratio))
    elif layer.type == "HardNetLoss":
        p = layer.hardnet_loss_param
        options = HardNetOptions(decimal(p.margin), bool(p.anchor_swap), BATCH_REDUCES[p.batch_reduce],
                                 LOSS_TYPES[p.loss_type], decimal(p.eps), decimal(p.duplicate_threshold),
                                 int(p.seed) if p.HasField("seed") else None)
    elif layer.type == "Python":
        module, cls = layer.python_param.module, layer.python_param.layer
        python_layer = f"{module}.{cls}"
        type_name = _python_layer_type(module, cls)
        options = parse_param_str(layer.python_param.param_str, SPECS[type_name].options_class)
    else:
        raise ValueError(f"layer {layer_name!r} is a {layer.type}, not MiningContrastiveLoss, HardNetLoss or a "
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


def _net_bottom_shapes(path: str, bottoms: Sequence[str], phase: str) -> List[Tuple[int, ...]]:
    """The shapes of ``bottoms`` in the net ``path``, read by instantiating it in a subprocess: a net whose data
    layer cannot open its source makes Caffe abort the whole process."""
    _import_caffe()
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


# ---------------------------------------------------------------------------------------------------------------
# CLI

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
                        help="HardNetLoss: give the optional label bottom (default: %(default)s)")
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
            shapes = _net_bottom_shapes(args.prototxt, bottoms, args.phase)
            n = shapes[0][0] if n is None else n
            dim = int(np.prod(shapes[0][1:])) if dim is None else dim
        has_labels = type_name == "MiningContrastiveLoss" or len(bottoms) == 3
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


if __name__ == "__main__":
    sys.exit(main())
