"""Training curves from the log that ``caffe train`` writes (glog lines of Caffe's solver.cpp).

The lines it reads::

    ... solver.cpp:239] Iteration 100 (812.3 iter/s, 0.123s/100 iters), loss = 0.0421
    ... solver.cpp:258]     Train net output #0: loss = 0.0421 (* 1 = 0.0421 loss)
    ... solver.cpp:347] Iteration 500, Testing net (#0)
    ... solver.cpp:414]     Test net output #0: loss = 0.0375 (* 1 = 0.0375 loss)
    ... solver.cpp:327] Iteration 2000, loss = 0.0318

The displayed ``loss`` is the weighted sum of the net's losses, smoothed over ``average_loss`` iterations;
the per-output values are those of the displayed iteration.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainingLog", "parse_caffe_log"]

_NUMBER = r"([-+]?(?:nan|inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?))"
_DISPLAY = re.compile(r"\] Iteration (\d+) \(" + _NUMBER + r" iter/s, " + _NUMBER + r"s/\d+ iters\), loss = "
                      + _NUMBER, re.IGNORECASE)
_FINAL = re.compile(r"\] Iteration (\d+), loss = " + _NUMBER, re.IGNORECASE)
_TRAIN_OUTPUT = re.compile(r"\]\s+Train net output #\d+: (\S+) = " + _NUMBER, re.IGNORECASE)
_TESTING = re.compile(r"\] Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUTPUT = re.compile(r"\]\s+Test net output #\d+: (\S+) = " + _NUMBER, re.IGNORECASE)


@dataclass
class TrainingLog:
    """Curves as (iteration, value) lists. ``train_loss``: the displayed (smoothed) loss; ``train_outputs`` /
    ``test_outputs``: per output blob name (test outputs of test net #0 only); ``iterations_per_second``: the
    solver's own timing of each display interval."""
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    train_outputs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    test_outputs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    iterations_per_second: list[tuple[int, float]] = field(default_factory=list)
    finished: bool = False


def parse_caffe_log(log: str | os.PathLike | list[str]) -> TrainingLog:
    """Parses a log file (path) or its lines."""
    lines = Path(log).read_text(errors="replace").splitlines() if isinstance(log, (str, os.PathLike)) else log
    curves = TrainingLog()
    train_iteration = None
    test_iteration = None  # set while the lines of test net #0 are being printed
    for line in lines:
        if match := _DISPLAY.search(line):
            train_iteration = int(match.group(1))
            curves.iterations_per_second.append((train_iteration, float(match.group(2))))
            curves.train_loss.append((train_iteration, float(match.group(4))))
            test_iteration = None
        elif match := _TRAIN_OUTPUT.search(line):
            if train_iteration is not None:
                curves.train_outputs.setdefault(match.group(1), []).append((train_iteration, float(match.group(2))))
        elif match := _TESTING.search(line):
            test_iteration = int(match.group(1)) if match.group(2) == "0" else None
        elif match := _TEST_OUTPUT.search(line):
            if test_iteration is not None:
                curves.test_outputs.setdefault(match.group(1), []).append((test_iteration, float(match.group(2))))
        elif match := _FINAL.search(line):
            iteration = int(match.group(1))
            if not curves.train_loss or curves.train_loss[-1][0] != iteration:
                curves.train_loss.append((iteration, float(match.group(2))))
        elif "Optimization Done." in line:
            curves.finished = True
    return curves
