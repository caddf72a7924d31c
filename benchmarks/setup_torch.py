"""`python -m benchmarks setup-torch`: installs torch and pytorch-metric-learning from PyPI into a folder of its
own for the comparisons (HardNet's authors' loss in torch; pml's DistanceWeightedMiner + MarginLoss).

torch is not a dependency of caffe-mining: it goes to $CAFFE_MINING_CACHE/bench-torch (default
~/.cache/caffe-mining/bench-torch), which only the benchmark adds to sys.path (after the environment's own
packages). PyPI's Linux wheel brings its CUDA libraries as dependencies (about 4 GB installed); the CPU-only
wheels live on another index, which this project does not use.

The versions are pinned in benchmarks/torch-constraints.txt (those of the measured results);
`--refresh-constraints` first re-pins them to what pip resolves for the newest torch and pytorch-metric-learning
(a dry run: metadata only).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.hardnet_torch import torch_site

CONSTRAINTS = Path(__file__).with_name("torch-constraints.txt")
PACKAGES = ("torch", "pytorch-metric-learning")  # what setup-torch installs, with their dependencies
HEADER = """\
# The versions `python -m benchmarks setup-torch` installs (pip install -c): torch, pytorch-metric-learning and
# what they pull in, as the benchmark results were measured. `python -m benchmarks setup-torch --refresh-constraints`
# re-pins them to the newest releases (resolved by a pip dry run) before installing.
"""


def resolve_newest() -> list:
    """name==version of everything pip would install for the newest torch, without downloading the wheels."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                        "--report", str(report), *PACKAGES], check=True)
        installs = json.loads(report.read_text())["install"]
    return sorted((f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs), key=str.lower)


def write_constraints(pins: list, path: Path = CONSTRAINTS) -> None:
    path.write_text(HEADER + "\n".join(pins) + "\n")


def install(refresh: bool = False) -> int:
    if refresh:
        write_constraints(resolve_newest())
        print(f"re-pinned {CONSTRAINTS}", flush=True)
    target = torch_site()
    command = [sys.executable, "-m", "pip", "install", "--upgrade", "--target", str(target),
               "-c", str(CONSTRAINTS), *PACKAGES]
    print(" ".join(command), flush=True)
    return subprocess.call(command)
