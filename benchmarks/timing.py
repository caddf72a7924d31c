"""Timing of competing implementations, interleaved so that a noisy machine slows them all alike.

Each round runs one sample of every implementation in turn; a sample calls the implementation `number` times
(chosen once so that a sample lasts at least `min_sample_s`) and records the time per call. Ratios against the
baseline are taken per round (paired samples) and their median is reported: a load spike during one round then
shifts both numbers of the pair instead of one of them.

Two clocks: "cpu" (default) is this process's CPU time (user + system, all its threads), which does not count the
time the process waits while other processes hold the cores; with one BLAS thread it equals the wall time of an
idle machine, and it stays usable on a loaded one. "wall" is elapsed time (use it with several threads).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping


@dataclass
class Timing:
    """Per-call times of one implementation, one per round."""

    name: str
    seconds: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.1 = the middle half lies within 10% of the median)."""
        if len(self.seconds) < 4:
            return (max(self.seconds) - min(self.seconds)) / self.median
        q1, _, q3 = statistics.quantiles(self.seconds, n=4)
        return (q3 - q1) / self.median


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def calls_per_sample(fn: Callable[[], object], min_sample_s: float, clock: Callable[[], float]) -> int:
    """Smallest power of two of calls that lasts at least min_sample_s (after one untimed warm-up call)."""
    fn()
    number = 1
    while True:
        start = clock()
        for _ in range(number):
            fn()
        if clock() - start >= min_sample_s or number >= 1 << 20:
            return number
        number *= 2


def time_interleaved(implementations: Mapping[str, Callable[[], object]], rounds: int, warmup: int,
                     min_sample_s: float = 0.02, clock: str = "cpu") -> Dict[str, Timing]:
    """Times every implementation `rounds` times, round-robin, after `warmup` untimed rounds."""
    now = CLOCKS[clock]
    numbers = {name: calls_per_sample(fn, min_sample_s, now) for name, fn in implementations.items()}
    timings = {name: Timing(name) for name in implementations}
    for round_index in range(warmup + rounds):
        for name, fn in implementations.items():
            number = numbers[name]
            start = now()
            for _ in range(number):
                fn()
            elapsed = (now() - start) / number
            if round_index >= warmup:
                timings[name].seconds.append(elapsed)
    return timings


def paired_ratio(timing: Timing, baseline: Timing) -> float:
    """Median over rounds of time / baseline time in the same round."""
    return statistics.median(t / b for t, b in zip(timing.seconds, baseline.seconds))


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(count: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"
