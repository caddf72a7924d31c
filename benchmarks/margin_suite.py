"""`python -m benchmarks run --suite margin`: MarginLoss (issue 15) forward + backward against one SGEMM, and against
pytorch-metric-learning's DistanceWeightedMiner + MarginLoss on the CPU.

Per N: every runner is built, its loss checked (the core's against the NumPy reference with the same options, seed
and iteration, so the same triplets; pml's MarginLoss given the core's triplets against the core's loss), then all are
timed interleaved with one SGEMM N×D·(N×D)ᵀ of the same rounds (timing.py: CPU time, paired ratios).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import native
from benchmarks.runners import Context, FunctionRunner, Runner, SgemmFloor
from benchmarks.timing import format_seconds, paired_ratio, time_interleaved

# The options every runner uses: margin_loss_param's defaults (the paper's), nu 0, one beta.
MARGIN, BETA, CUTOFF, NONZERO_LOSS_CUTOFF = 0.2, 1.2, 0.5, 1.4
CLASS_SIZE = 4  # P x K batches, K = 4
SEED, ITERATION = 0, 0
TARGET_VS_FLOOR = 1.5  # issue 15, at every N of the suite
LOSS_RTOL = 1e-4
FLOOR = "SGEMM N×D·(N×D)ᵀ (floor)"
PML = "pytorch-metric-learning 2.8.1 (DistanceWeightedMiner + MarginLoss)"
README_MARGIN = ("<!-- benchmark-margin:begin -->", "<!-- benchmark-margin:end -->")


@dataclass(frozen=True)
class MarginConfig:
    sampler: str = "DISTANCE_WEIGHTED"
    negatives_per_positive: int = 1

    @property
    def label(self) -> str:
        return f"{self.sampler}, negatives_per_positive {self.negatives_per_positive}"

    def kwargs(self) -> dict:
        return dict(margin=MARGIN, beta_init=BETA, cutoff=CUTOFF, nonzero_loss_cutoff=NONZERO_LOSS_CUTOFF,
                    sampler=self.sampler, negatives_per_positive=self.negatives_per_positive, seed=SEED,
                    iteration=ITERATION)


# What users train with (issue 15).
MARGIN_CONFIGS: Tuple[MarginConfig, ...] = (MarginConfig("DISTANCE_WEIGHTED", 1), MarginConfig("UNIFORM", 1),
                                             MarginConfig("DISTANCE_WEIGHTED", 5))


def margin_batch(n: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """n / CLASS_SIZE classes of CLASS_SIZE unit rows each, labels 0, 0, 0, 0, 1, ...: each row is its class's
    random centre plus noise of norm 1, normalised, so positives lie about 1.0 apart (about half of their hinges
    d_ap - beta + margin active) and 40% of the other pairs under nonzero_loss_cutoff 1.4: the sampler
    weighs real rows and both hinges occur."""
    rng = np.random.default_rng(seed)
    classes = -(-n // CLASS_SIZE)
    centre = rng.standard_normal((classes, dim))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), CLASS_SIZE)[:n]
    x = centre[labels] + rng.standard_normal((n, dim)) / math.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.float32)


def core_name(config: MarginConfig) -> str:
    return f"core via bindings, {config.label}"


class PmlRunner(Runner):
    """pml's DistanceWeightedMiner (cutoff 0.5, nonzero_loss_cutoff 1.4) then its MarginLoss (margin 0.2, beta 1.2
    learnt, nu 0), autograd backward: gradients of the embedding and of beta, as the core computes."""

    def __init__(self, torch, x: np.ndarray, labels: np.ndarray):
        from pytorch_metric_learning import distances, losses, miners

        self.torch = torch
        torch.manual_seed(SEED)
        self.x = torch.from_numpy(x).requires_grad_(True)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.miner = miners.DistanceWeightedMiner(cutoff=CUTOFF, nonzero_loss_cutoff=NONZERO_LOSS_CUTOFF)
        # The core does not normalise (its inputs are unit rows): neither does this loss's distance. The miner's
        # must (pml asserts it); on unit rows that changes its distances by rounding only.
        self.loss = losses.MarginLoss(margin=MARGIN, nu=0.0, beta=BETA, learn_beta=True,
                                      distance=distances.LpDistance(normalize_embeddings=False))

    def loss_of(self, triplets: np.ndarray) -> float:
        """pml's MarginLoss on given (a, p, n) rows (the agreement check)."""
        t = self.torch.from_numpy(triplets.astype(np.int64))
        return float(self.loss(self.x, self.labels, (t[:, 0], t[:, 1], t[:, 2])).detach())

    def __call__(self):
        self.x.grad = None
        self.loss.beta.grad = None
        value = self.loss(self.x, self.labels, self.miner(self.x, self.labels))
        value.backward()
        return float(value.detach())

    def io_bytes(self):
        return self.x.numel() * 4


def factories(ctx: Context, n: int, dim: int, configs=MARGIN_CONFIGS) -> Dict[str, Callable[[], Runner]]:
    import caffe_mining

    x, labels = margin_batch(n, dim)
    made: Dict[str, Callable[[], Runner]] = {FLOOR: lambda: SgemmFloor(ctx.lib, x, x)}
    for config in configs:
        made[core_name(config)] = lambda c=config: FunctionRunner(
            lambda: caffe_mining.margin_loss(x, labels, **c.kwargs()))
    if ctx.torch is not None and pml_available():
        made[PML] = lambda: PmlRunner(ctx.torch, x, labels)
    return made


def pml_available() -> bool:
    try:
        import pytorch_metric_learning  # noqa: F401
    except ImportError:
        return False
    return True


def _agree(value: Optional[float], expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=LOSS_RTOL, abs_tol=1e-7)


def run_margin(ctx: Context, sizes: Sequence[int], dim: int, settings, log: Callable[[str], None]) -> List[dict]:
    """Rows of the MarginLoss table: per N the floor, each configuration through the core, and pml."""
    import caffe_mining

    rows = []
    for n in sizes:
        log(f"MarginLoss N={n} D={dim}")
        made = {name: make() for name, make in factories(ctx, n, dim).items()}
        x, labels = margin_batch(n, dim)
        checks: Dict[str, Optional[bool]] = {FLOOR: None}
        losses: Dict[str, Optional[float]] = {FLOOR: None}
        for config in MARGIN_CONFIGS:
            name = core_name(config)
            losses[name] = made[name]()
            expected = caffe_mining.reference.margin_loss(x.astype(np.float64), labels, backward=False,
                                                          **config.kwargs()).loss
            checks[name] = _agree(losses[name], float(expected))
        if PML in made:
            losses[PML] = made[PML]()
            first = MARGIN_CONFIGS[0]
            core = caffe_mining.margin_loss(x, labels, backward=False, **first.kwargs())
            checks[PML] = _agree(made[PML].loss_of(np.asarray(core.triplets)), float(core.loss))
        timings = time_interleaved(made, rounds=settings.rounds, warmup=settings.warmup,
                                   min_sample_s=settings.min_sample_s, clock=settings.clock)
        floor, pml = timings[FLOOR], timings.get(PML)
        for name, timing in timings.items():
            log(f"  {name:72s} {timing.median * 1e3:10.3f} ms  (IQR {timing.spread:.0%})")
            rows.append({"n": n, "impl": name, "median_s": timing.median, "spread": timing.spread,
                         "seconds": timing.seconds, "loss": losses[name], "agrees": checks[name],
                         "vs_floor": paired_ratio(timing, floor),
                         "vs_pml": paired_ratio(timing, pml) if pml is not None else None})
    return rows


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def table(rows: List[dict]) -> str:
    lines = ["| N | implementation | median | IQR | × SGEMM | × pml | loss |", "|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        loss = "—" if row["loss"] is None else f"{row['loss']:.6g}" + (
            " **disagrees**" if row["agrees"] is False else "")
        lines.append(f"| {row['n']} | {row['impl']} | {format_seconds(row['median_s'])} | {row['spread']:.0%} "
                     f"| {_ratio(row['vs_floor'])} | {_ratio(row['vs_pml'])} | {loss} |")
    return "\n".join(lines)


def verdicts(rows: List[dict]) -> List[str]:
    lines = []
    for config in MARGIN_CONFIGS:
        mine = [row for row in rows if row["impl"] == core_name(config)]
        if not mine:
            continue
        met = all(row["vs_floor"] <= TARGET_VS_FLOOR for row in mine)
        per_n = ", ".join(f"N={row['n']}: {row['vs_floor']:.2f}×" for row in mine)
        lines.append(f"- {config.label} ≤ {TARGET_VS_FLOOR}× one SGEMM: {per_n} — {'met' if met else 'MISSED'}")
    if any(row["agrees"] is False for row in rows):
        lines.append("- **some loss disagrees with its check** (see the table)")
    return lines


def markdown(results: dict, header: str) -> str:
    rows = results["margin"]
    return "\n".join([
        header, "",
        f"Targets (issue 15, one SGEMM N×D·(N×D)ᵀ of the kernel named above):", *verdicts(rows), "",
        f"MarginLoss forward + backward, D = {results['settings']['dim']}, float32, P×K batches (K = {CLASS_SIZE}), "
        f"margin {MARGIN}, beta {BETA}, cutoff {CUTOFF}, nonzero_loss_cutoff {NONZERO_LOSS_CUTOFF}, seed {SEED}; core "
        f"losses checked against the NumPy reference (same triplets), pml's MarginLoss on the core's "
        f"DISTANCE_WEIGHTED triplets against the core's loss:", "",
        table(rows)]) + "\n"
