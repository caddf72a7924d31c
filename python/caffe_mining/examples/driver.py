"""What the example drivers (``models/*/run.py``) share around their own data and evaluation: the command line,
training every variant and seed (or reloading them for ``--replot``), and writing the results."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from caffe_mining.examples.caffe_run import cache_dir, data_dir, find_caffe_binary, import_pycaffe
from caffe_mining.examples.experiment import Variant, train_and_evaluate, write_json

__all__ = ["RunLengths", "example_parser", "resolve_arguments", "start", "train_or_reload", "write_results"]


@dataclass(frozen=True)
class RunLengths:
    """Iterations and snapshot spacing of a full run and of ``--quick`` (which also trains one seed only)."""
    iterations: int
    snapshot_every: int
    quick_iterations: int
    quick_snapshot_every: int


def example_parser(description: str, example: str, variants: list[Variant], lengths: RunLengths,
                   base_lr: float) -> argparse.ArgumentParser:
    """The options every driver has; a driver adds its own data options to the parser it gets."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"1 seed, {lengths.quick_iterations} iterations, "
                        f"snapshots every {lengths.quick_snapshot_every}")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 1 2 3; --quick: 1)")
    parser.add_argument("--iterations", type=int, help=f"max_iter (default {lengths.iterations}; "
                        f"--quick: {lengths.quick_iterations})")
    parser.add_argument("--snapshot-every", type=int, help="iterations between evaluated snapshots "
                        f"(default {lengths.snapshot_every}; --quick: {lengths.quick_snapshot_every})")
    parser.add_argument("--variants", nargs="+", choices=[v.name for v in variants], default=[v.name for v in variants])
    parser.add_argument("--base-lr", type=float, help=f"the solver's base_lr (default: solver.prototxt's, {base_lr:g})")
    parser.add_argument("--data-dir", type=Path, help=f"default $CAFFE_MINING_DATA/{example} or "
                        f"~/.cache/caffe-mining/data/{example}")
    parser.add_argument("--out", type=Path, help=f"runs folder (default ~/.cache/caffe-mining/runs/{example}[-quick])")
    parser.add_argument("--results", type=Path, help="where results.json, results.md and the PNGs go "
                        "(default <out>/results)")
    parser.add_argument("--caffe", help="the caffe binary (default $CAFFE_MINING_CAFFE_BIN, then the build)")
    parser.add_argument("--replot", action="store_true", help="no training: redraw the figures from "
                        "<results>/results.json and the snapshots it names")
    return parser


def resolve_arguments(args: argparse.Namespace, example: str, lengths: RunLengths,
                      data_name: str | None = None) -> argparse.Namespace:
    """Fills the defaults that depend on --quick and on the cache (data under ``data_name``, default ``example``)."""
    args.seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    args.iterations = args.iterations or (lengths.quick_iterations if args.quick else lengths.iterations)
    args.snapshot_every = args.snapshot_every or (lengths.quick_snapshot_every if args.quick
                                                  else lengths.snapshot_every)
    args.data_dir = (args.data_dir or data_dir(data_name or example)).resolve()
    args.out = (args.out or cache_dir() / "runs" / (f"{example}-quick" if args.quick else example)).resolve()
    args.results = (args.results or args.out / "results").resolve()
    return args


def start(args: argparse.Namespace) -> Path:
    """The caffe binary, after checking that pycaffe imports too (before any training, not after it)."""
    caffe_bin = find_caffe_binary(args.caffe)
    import_pycaffe()
    print(f"caffe: {caffe_bin}\nruns: {args.out}\nresults: {args.results}")
    return caffe_bin


def train_or_reload(args: argparse.Namespace, caffe_bin: Path, example_dir: Path, variants: list[Variant],
                    sources: dict[str, Path], evaluate: Callable[[Path], dict],
                    overrides: dict) -> tuple[list[dict], dict]:
    """Every (seed, variant) run trained with ``caffe train`` from the example's templates and evaluated, or with
    --replot the runs and settings of ``<results>/results.json``. Returns (runs, settings)."""
    if args.replot:
        stored = json.loads((args.results / "results.json").read_text())
        return [run for run in stored["runs"] if run["variant"] in args.variants], stored["settings"]
    if args.base_lr:
        overrides = {**overrides, "base_lr": args.base_lr}
    runs = [train_and_evaluate(caffe_bin, example_dir / "train_val.prototxt", example_dir / "solver.prototxt",
                               variant, seed, args.out / f"{variant.name}-seed{seed}", sources, evaluate, overrides)
            for seed in args.seeds for variant in variants]
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    return runs, settings


def write_results(example: str, args: argparse.Namespace, record: dict, table: str, raw: dict,
                  started: float) -> None:
    """``results.json`` (``record`` after the example's name), ``results.md`` (the table), and the summary."""
    write_json({"example": example, **record}, args.results / "results.json")
    (args.results / "results.md").write_text(table + "\n")
    print("\nraw pixels: " + ", ".join(f"{k} {v:.4f}" for k, v in raw.items()))
    print(table)
    print(f"\nfigures and results.json in {args.results}; total {time.monotonic() - started:.0f} s")
