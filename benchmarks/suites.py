"""Runs the two suites: per size, builds every runner, checks that their losses agree, then times them interleaved.

Each result row carries the ratios against the baselines measured in the same rounds (timing.paired_ratio).
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from benchmarks import runners
from benchmarks.timing import Timing, paired_ratio, time_interleaved

@dataclass
class TimingSettings:
    rounds: int
    warmup: int
    min_sample_s: float
    clock: str


# float32 implementations against each other and against the float64 reference: sums of N float32 terms.
LOSS_RTOL = 1e-4


def _time_suite(factories: Dict[str, Callable[[], runners.Runner]], settings: TimingSettings,
                log: Callable[[str], None]):
    made = {name: make() for name, make in factories.items()}
    losses = {name: run() for name, run in made.items()}
    timings = time_interleaved(made, rounds=settings.rounds, warmup=settings.warmup,
                               min_sample_s=settings.min_sample_s, clock=settings.clock)
    del made
    gc.collect()
    for name, timing in timings.items():
        log(f"  {name:48s} {timing.median * 1e3:10.3f} ms  (IQR {timing.spread:.0%})")
    return losses, timings


def _row(n: int, name: str, timing: Timing, loss: Optional[float], **ratios: Optional[float]) -> dict:
    row = {"n": n, "impl": name, "median_s": timing.median, "spread": timing.spread, "seconds": timing.seconds,
           "loss": loss}
    row.update(ratios)
    return row


def _agree(value: Optional[float], expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=LOSS_RTOL, abs_tol=1e-7)


def run_hardnet(ctx: runners.Context, sizes: Sequence[int], dim: int, settings: TimingSettings,
                log: Callable[[str], None]) -> List[dict]:
    """Rows of the HardNet table: time, ratio to the SGEMM floor and to PyTorch, loss and agreement."""
    rows = []
    for n in sizes:
        log(f"HardNetLoss N={n} D={dim}")
        losses, timings = _time_suite(runners.hardnet_factories(ctx, n, dim), settings, log)
        expected = next(loss for name, loss in losses.items() if name.startswith("NumPy"))
        floor = timings[runners.HARDNET_FLOOR]
        torch_timing = timings.get(runners.HARDNET_TORCH)
        for name, timing in timings.items():
            row = _row(n, name, timing, losses[name], vs_floor=paired_ratio(timing, floor),
                       vs_torch=paired_ratio(timing, torch_timing) if torch_timing else None)
            row["agrees"] = None if losses[name] is None else _agree(losses[name], expected)
            rows.append(row)
    return rows


def run_hardnet_configs(ctx: runners.Context, sizes: Sequence[int], dim: int, settings: TimingSettings,
                        log: Callable[[str], None]) -> List[dict]:
    """Rows of the per-configuration table: every mining configuration through the core and the layer, each
    against one SGEMM of the same rounds, its loss against the NumPy reference with the same options."""
    rows = []
    for n in sizes:
        log(f"HardNetLoss configurations N={n} D={dim}")
        losses, timings = _time_suite(runners.hardnet_config_factories(ctx, n, dim), settings, log)
        floor = timings[runners.HARDNET_FLOOR]
        rows.append(_row(n, runners.HARDNET_FLOOR, floor, None, vs_floor=1.0))
        rows[-1].update(config=None, path="floor", agrees=None)
        for config in runners.HARDNET_CONFIGS:
            expected = runners.hardnet_config_reference_loss(n, dim, config)
            for path, name in (("core", runners.config_core_name(config)),
                               ("layer", runners.config_layer_name(config))):
                if name not in timings:
                    continue
                row = _row(n, name, timings[name], losses[name], vs_floor=paired_ratio(timings[name], floor))
                row.update(config=config.label, path=path, agrees=_agree(losses[name], expected))
                rows.append(row)
    return rows


def run_contrastive(ctx: runners.Context, sizes: Sequence[int], dim: int, ratios: Sequence[int],
                    settings: TimingSettings, log: Callable[[str], None]) -> List[dict]:
    """Rows of the contrastive table: time, ratio to Caffe's ContrastiveLoss and to the multimap selection."""
    rows = []
    for n in sizes:
        log(f"MiningContrastiveLoss N={n} D={dim} ratios={list(ratios)}")
        losses, timings = _time_suite(runners.contrastive_factories(ctx, n, dim, ratios), settings, log)
        caffe_timing = timings.get(runners.CONTRASTIVE_CAFFE)
        # Caffe's ContrastiveLoss is checked against mining_ratio 1 (no mining), measured or not.
        expected = {ratio: runners.contrastive_reference_loss(n, dim, ratio) for ratio in {1, *ratios}}
        for name, timing in timings.items():
            ratio = next((r for r in ratios if name.endswith(f"r={r}") or f"r={r} " in name), None)
            multimap = timings.get(runners.multimap_name(ratio)) if ratio is not None else None
            row = _row(n, name, timing, losses[name],
                       vs_caffe=paired_ratio(timing, caffe_timing) if caffe_timing else None,
                       vs_multimap=paired_ratio(timing, multimap) if multimap else None)
            row["mining_ratio"] = ratio
            row["agrees"] = _agree(losses[name], expected[ratio if ratio is not None else 1])
            rows.append(row)
    return rows
