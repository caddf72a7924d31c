"""The TripletLoss suite (issue 16): every mining x {hinge, soft margin}, float32, forward + backward, each against
one SGEMM N x D times its transpose timed in the same rounds, and pytorch-metric-learning where it has the same loss.

Batches are P x K with K = 4 rows a class (benchmarks/triplet_suite.triplet_batch). Every loss is checked against a
float64 oracle: the NumPy reference where its N^3 BATCH_ALL tensor is small (N <= REFERENCE_MAX_N), else the
float64 core through the bindings (itself checked against the reference by tests/test_triplet.py).

pytorch-metric-learning (pml; installed next to torch by `python -m benchmarks setup-torch`), LpDistance(p=2,
power=1, normalize_embeddings=False), autograd for the backward:
  - BATCH_HARD: BatchHardMiner + TripletMarginLoss(margin=0.2, reducer=MeanReducer()) — the same quantity.
  - BATCH_ALL: TripletMarginLoss(margin=0.2) without a miner (every triplet) and its default AvgNonZeroReducer
    (mean over the terms > 0) — the same quantity.
  - soft margin: smooth_loss=True with margin=0 (pml's softplus takes the margin inside: softplus(d_ap - d_an + m)).
  - SEMI_HARD: pml has no equivalent (its TripletMarginMiner "semihard" keeps every semi-hard triplet, not one
    negative per positive pair with TF's fallback): not timed.
  Differences: pml's distance has no eps inside the root (ours 1e-12), and its miner breaks ties as torch.max does.
"""
from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import hardnet_torch, native, runners
from benchmarks.timing import format_seconds, paired_ratio

MARGIN = 0.2
ROWS_PER_CLASS = 4
REFERENCE_MAX_N = 256
MINING_CODES = {"BATCH_HARD": 0, "BATCH_ALL": 1, "SEMI_HARD": 2}  # the core's TripletMiner
# Issue 16's targets against one SGEMM N x D x N, at N >= TARGET_MIN_N.
VS_FLOOR_MAX = {"BATCH_HARD": 1.3, "SEMI_HARD": 2.0, "BATCH_ALL": 3.3}
TARGET_MIN_N = 512
FLOOR = "SGEMM N×D×N (floor)"
README_MARKERS = ("<!-- benchmark-triplet:begin -->", "<!-- benchmark-triplet:end -->")
_FLOAT_P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")


@dataclass(frozen=True)
class TripletConfig:
    mining: str
    soft_margin: bool

    @property
    def label(self) -> str:
        return f"{self.mining}, {'soft margin' if self.soft_margin else 'hinge'}"


CONFIGS: Tuple[TripletConfig, ...] = tuple(TripletConfig(mining, soft)
                                           for mining in ("BATCH_HARD", "SEMI_HARD", "BATCH_ALL")
                                           for soft in (False, True))


def triplet_batch(n: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """n unit rows in classes of ROWS_PER_CLASS (labels shuffled): a row is its class centre plus noise, about 1.25
    from its class mates while other rows lie about 1.41 +- 0.06 apart, so with margin 0.2 hinges are open and
    closed and semi-hard negatives lie both beyond and inside the positive's distance."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) // ROWS_PER_CLASS)
    centres = rng.standard_normal((labels.max() + 1, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[labels] + 1.9 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.float32)


def _declare(lib) -> None:
    lib.bench_triplet_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float]
    lib.bench_triplet_create.restype = ctypes.c_void_p
    lib.bench_triplet_destroy.argtypes = [ctypes.c_void_p]
    lib.bench_triplet_forward_backward.argtypes = [ctypes.c_void_p, ctypes.c_int, _FLOAT_P, _FLOAT_P, _FLOAT_P]
    lib.bench_triplet_forward_backward.restype = ctypes.c_float


class NativeTriplet(runners.Runner):
    """The core's triplet_forward_cpu + triplet_backward_cpu (benchmarks/native/triplet_calls.cpp), buffers reused."""

    def __init__(self, lib, x, labels, config: TripletConfig):
        _declare(lib)
        self.lib, self.x, self.labels = lib, x, labels
        self.handle = native.NativeHandle(lib, "triplet", len(x), MINING_CODES[config.mining],
                                          int(config.soft_margin), MARGIN)
        self.grad = np.empty_like(x)

    def __call__(self):
        return float(self.lib.bench_triplet_forward_backward(self.handle.pointer, self.x.shape[1], self.x,
                                                             self.labels, self.grad))

    def io_bytes(self):
        return self.grad.nbytes


def import_pml(torch) -> Optional[object]:
    """pytorch_metric_learning from the environment or setup-torch's folder; None if absent (or torch is)."""
    if torch is None:
        return None
    try:
        import pytorch_metric_learning  # noqa: F401
    except ImportError:
        site = str(hardnet_torch.torch_site())
        if site not in sys.path:
            sys.path.append(site)
        try:
            import pytorch_metric_learning  # noqa: F401,F811
        except ImportError:
            return None
    return pytorch_metric_learning


def pml_supports(config: TripletConfig) -> bool:
    return config.mining in ("BATCH_HARD", "BATCH_ALL")


class PmlTriplet(runners.Runner):
    """pytorch-metric-learning's formulation of the same loss (see the module's docstring), autograd backward."""

    def __init__(self, torch, x, labels, config: TripletConfig):
        from pytorch_metric_learning import losses, miners, reducers
        from pytorch_metric_learning.distances import LpDistance

        self.torch = torch
        self.x = torch.from_numpy(x).requires_grad_(True)  # shares the NumPy input
        self.labels = torch.from_numpy(labels.astype(np.int64))
        distance = LpDistance(p=2, power=1, normalize_embeddings=False)
        margin = 0.0 if config.soft_margin else MARGIN
        reducer = reducers.MeanReducer() if config.mining == "BATCH_HARD" else reducers.AvgNonZeroReducer()
        self.loss = losses.TripletMarginLoss(margin=margin, smooth_loss=config.soft_margin, distance=distance,
                                             reducer=reducer)
        self.miner = miners.BatchHardMiner(distance=distance) if config.mining == "BATCH_HARD" else None

    def __call__(self):
        self.x.grad = None
        triplets = self.miner(self.x, self.labels) if self.miner is not None else None
        loss = self.loss(self.x, self.labels, triplets)
        loss.backward()
        return float(loss.detach())

    def io_bytes(self):
        return 0 if self.x.grad is None else self.x.grad.numel() * self.x.grad.element_size()


def core_name(config: TripletConfig) -> str:
    return f"core (C++, buffers reused), {config.label}"


def pml_name(config: TripletConfig) -> str:
    return f"pytorch-metric-learning, {config.label}"


def factories(ctx: runners.Context, n: int, dim: int, pml=None,
              configs=CONFIGS) -> Dict[str, Callable[[], runners.Runner]]:
    """Name -> factory at batch n: the SGEMM floor, then per configuration the core and (where it has the loss and
    is installed) pml."""
    x, labels = triplet_batch(n, dim)
    made: Dict[str, Callable[[], runners.Runner]] = {FLOOR: lambda: runners.SgemmFloor(ctx.lib, x, x)}
    for config in configs:
        made[core_name(config)] = lambda c=config: NativeTriplet(ctx.lib, x, labels, c)
        if pml is not None and pml_supports(config):
            made[pml_name(config)] = lambda c=config: PmlTriplet(ctx.torch, x, labels, c)
    return made


def oracle_loss(n: int, dim: int, config: TripletConfig) -> Tuple[float, str]:
    """The float64 loss of the benchmark's batch, and which oracle gave it."""
    import caffe_mining

    x, labels = triplet_batch(n, dim)
    options = dict(margin=MARGIN, soft_margin=config.soft_margin, mining=config.mining, backward=False)
    if n <= REFERENCE_MAX_N:
        return float(caffe_mining.reference.triplet_loss(x.astype(np.float64), labels, **options).loss), "reference"
    return float(caffe_mining.triplet_loss(x.astype(np.float64), labels.astype(np.float64), **options).loss), \
        "float64 core"


def _agree(value: Optional[float], expected: float) -> bool:
    from benchmarks.suites import LOSS_RTOL

    return value is not None and math.isclose(value, expected, rel_tol=LOSS_RTOL, abs_tol=1e-7)


def run(ctx: runners.Context, sizes: Sequence[int], dim: int, settings, log: Callable[[str], None]) -> List[dict]:
    """Rows of the triplet table: per N the floor, per configuration the core and pml against it."""
    from benchmarks.suites import _row, _time_suite

    pml = import_pml(ctx.torch)
    if pml is None:
        log("pytorch-metric-learning not installed (python -m benchmarks setup-torch): left out")
    rows = []
    for n in sizes:
        log(f"TripletLoss N={n} D={dim} K={ROWS_PER_CLASS}")
        losses, timings = _time_suite(factories(ctx, n, dim, pml), settings, log)
        floor = timings[FLOOR]
        rows.append(_row(n, FLOOR, floor, None, vs_floor=1.0))
        rows[-1].update(config=None, path="floor", agrees=None, oracle=None)
        for config in CONFIGS:
            expected, oracle = oracle_loss(n, dim, config)
            core = timings[core_name(config)]
            for path, name in (("core", core_name(config)), ("pml", pml_name(config))):
                if name not in timings:
                    continue
                row = _row(n, name, timings[name], losses[name], vs_floor=paired_ratio(timings[name], floor),
                           vs_core=paired_ratio(timings[name], core))
                row.update(config=config.label, mining=config.mining, path=path,
                           agrees=_agree(losses[name], expected), oracle=oracle)
                rows.append(row)
    return rows


def _ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _loss(row: Optional[dict]) -> str:
    if row is None or row["loss"] is None:
        return "—"
    return f"{row['loss']:.6g}" + ("" if row["agrees"] else " **disagrees**")


def table(rows: List[dict]) -> str:
    lines = ["| N | configuration | SGEMM (floor) | core | × SGEMM | target | pml | × SGEMM | pml / core | loss "
             "(core; pml) |", "|---:|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for n in sorted({row["n"] for row in rows}):
        at_n = [row for row in rows if row["n"] == n]
        floor = next(row for row in at_n if row["path"] == "floor")
        for config in dict.fromkeys(row["config"] for row in at_n if row["config"] is not None):
            paths = {row["path"]: row for row in at_n if row["config"] == config}
            core, pml = paths["core"], paths.get("pml")
            target = VS_FLOOR_MAX[core["mining"]]
            verdict = (f"≤ {target}×: {'met' if core['vs_floor'] <= target else '**MISSED**'}"
                       if n >= TARGET_MIN_N else "—")
            pml_cells = (["—", "—", "—"] if pml is None else
                         [format_seconds(pml["median_s"]), _ratio(pml["vs_floor"]), _ratio(pml["vs_core"])])
            lines.append(f"| {n} | {config} | {format_seconds(floor['median_s'])} | "
                         f"{format_seconds(core['median_s'])} | {_ratio(core['vs_floor'])} | {verdict} | "
                         f"{' | '.join(pml_cells)} | {_loss(core)}; {_loss(pml)} |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    from benchmarks.report import header

    rows = results["triplet"]
    oracles = sorted({f"N={row['n']}: {row['oracle']}" for row in rows if row.get("oracle")},
                     key=lambda s: int(s.split(":")[0][2:]))
    return "\n".join([
        header(results), "",
        f"TripletLoss forward + backward, D = {results['settings']['dim']}, float32, P×K batches with K = "
        f"{ROWS_PER_CLASS}, margin {MARGIN}; targets at N ≥ {TARGET_MIN_N} against one SGEMM N×D×N; pml = "
        "pytorch-metric-learning (BatchHardMiner + TripletMarginLoss for BATCH_HARD, TripletMarginLoss over all "
        "triplets for BATCH_ALL; see benchmarks/triplet_suite.py for what differs); losses checked against "
        f"({'; '.join(dict.fromkeys(o.split(': ')[1] + ' at ' + o.split(':')[0] for o in oracles))}):", "",
        table(rows)]) + "\n"
