"""`python -m benchmarks revisions --before REV`: the core of another revision against this tree's, interleaved.

Builds REV's Caffe-free bindings (`setup.py build_ext`, CPU only) in a scratch `git worktree`, loads both
extension modules into this process, and times forward + backward of every configuration a user trains with:
HardNetLoss MIN / RANDOM / AVERAGE with and without anchor swap, MiningContrastiveLoss at mining ratios 1, 2, 4,
TripletLoss BATCH_HARD / SEMI_HARD / BATCH_ALL with the hinge and the soft margin (P x K batches, K = 4).
Each configuration's two calls are checked to give the same loss and gradients, bit for bit, before they are timed
(the refactors this compares promise no change of behaviour). CPU time, one BLAS thread, medians of interleaved
rounds; the table gives each revision's time and the median of after / before over the rounds.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from benchmarks import inputs
from benchmarks.timing import Timing, format_seconds, paired_ratio, time_interleaved

REPO = Path(__file__).resolve().parents[1]
HARDNET_CONFIGS = [(reduce, swap) for reduce in ("MIN", "RANDOM", "AVERAGE") for swap in (False, True)]
TRIPLET_CONFIGS = [(mining, soft) for mining in ("BATCH_HARD", "SEMI_HARD", "BATCH_ALL") for soft in (False, True)]


def build_revision(revision: str, scratch: Path) -> Path:
    """REV's _core extension, built in a worktree under `scratch`; returns the .so's path."""
    tree = scratch / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tree, check=True,
                   capture_output=True, env={**os.environ, "CAFFE_MINING_CUDA": "0"})
    return next((tree / "python" / "caffe_mining").glob("_core*.so"))


def load_extension(path: Path, alias: str):
    """Loads a `_core` extension from `path` under the package name `alias` (so two can live in one process)."""
    spec = importlib.util.spec_from_file_location(f"{alias}._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a == b or (a != a and b != b)


def configurations(n_hardnet: List[int], n_contrastive: List[int], dim: int,
                   n_triplet: List[int] = ()) -> List[Tuple[str, Callable]]:
    """(name, call(module)) for every configuration."""
    from benchmarks.triplet_suite import triplet_batch

    out = []
    for n in n_hardnet:
        anchor, positive = inputs.hardnet_batch(n, dim)
        uniforms = np.random.default_rng(1).random(n)
        for reduce, swap in HARDNET_CONFIGS:
            name = f"HardNet {reduce}{' + swap' if swap else ''}, N = {n}"
            out.append((name, lambda m, a=anchor, p=positive, r=reduce, s=swap, u=uniforms: m.hardnet_loss(
                a, p, batch_reduce=r, anchor_swap=s, uniforms=u if r == "RANDOM" else None)))
    for n in n_contrastive:
        feat, feat_p, sim = inputs.contrastive_batch(n, dim)
        for ratio in (1, 2, 4):
            out.append((f"MiningContrastive ratio {ratio}, N = {n}",
                        lambda m, f=feat, g=feat_p, s=sim, r=ratio: m.mining_contrastive_loss(f, g, s, mining_ratio=r)))
    for n in n_triplet:
        x, labels = triplet_batch(n, dim)
        for mining, soft in TRIPLET_CONFIGS:
            out.append((f"Triplet {mining}{', soft margin' if soft else ''}, N = {n}",
                        lambda m, x=x, y=labels, k=mining, s=soft: m.triplet_loss(x, y, mining=k, soft_margin=s)))
    return out


def compare(before, after, configs, rounds: int, warmup: int, min_sample: float) -> List[Dict]:
    rows = []
    for name, call in configs:
        same = _same(call(before), call(after))
        timings: Dict[str, Timing] = time_interleaved({"before": lambda: call(before), "after": lambda: call(after)},
                                                      rounds, warmup, min_sample, clock="cpu")
        rows.append({"configuration": name, "before_s": timings["before"].median,
                     "after_s": timings["after"].median,
                     "after_over_before": paired_ratio(timings["after"], timings["before"]), "same_bits": same})
        print(f"{name}: {format_seconds(rows[-1]['before_s'])} -> {format_seconds(rows[-1]['after_s'])} "
              f"({rows[-1]['after_over_before']:.2f}x){'' if same else '  OUTPUTS DIFFER'}", flush=True)
    return rows


def markdown(rows: List[Dict], before: str, after: str) -> str:
    lines = [f"| configuration | before ({before}) | after ({after}) | after / before | same bits |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['configuration']} | {format_seconds(r['before_s'])} | {format_seconds(r['after_s'])} | "
                     f"{r['after_over_before']:.2f} | {'yes' if r['same_bits'] else 'NO'} |")
    return "\n".join(lines)


def main(args) -> int:
    from caffe_mining import _core as current
    after = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip() + " (this tree)"
    with tempfile.TemporaryDirectory(prefix="caffe-mining-revision-") as scratch:
        try:
            old = load_extension(build_revision(args.before, Path(scratch)), "caffe_mining_before")
            configs = configurations(args.hardnet_sizes, args.contrastive_sizes, args.dim,
                                     args.triplet_sizes if hasattr(old, "triplet_loss") else ())
            rows = compare(old, current, configs, args.rounds, args.warmup, args.min_sample)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(Path(scratch) / "tree")],
                           capture_output=True)
    print()
    print(markdown(rows, args.before, after))
    return 0 if all(r["same_bits"] for r in rows) else 1
