"""The loop both examples share: for each seed and loss variant, render the prototxt files, run
``caffe train``, evaluate every snapshot, and collect the numbers into one JSON-able record.

A *variant* is the training net with its layer named ``loss`` given another type and parameters; everything
else (data, towers, solver) stays the same, so differences between variants are the loss's doing.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from caffe_mining.examples.caffe_log import parse_caffe_log
from caffe_mining.examples.caffe_run import read_prototxt, run_caffe_train, snapshot_weights, write_prototxt
from caffe_mining.losses import LOSSES

__all__ = ["Variant", "markdown_table", "render_run", "summarise", "train_and_evaluate"]

LOSS_LAYER_NAME = "loss"


@dataclass(frozen=True)
class Variant:
    """One loss configuration: ``layer_params`` is prototxt text merged into the ``loss`` layer."""
    name: str          # file-safe, e.g. "mining4"
    label: str         # for legends and tables
    layer_type: str    # e.g. "MiningContrastiveLoss"
    layer_params: str  # e.g. "contrastive_loss_param { margin: 1 mining_ratio: 4 }"; may name bottoms and
                       # param (the layer's blobs' lr_mult), which then replace the template's


def render_run(net_template: Path, solver_template: Path, variant: Variant, seed: int, run_dir: Path,
               sources: dict[str, Path], solver_overrides: dict | None = None) -> Path:
    """Writes ``run_dir/train_val.prototxt`` and ``run_dir/solver.prototxt``; returns the solver's path.

    ``sources`` maps a phase ("TRAIN", "TEST") to the HDF5 list file of that phase's ``HDF5Data`` layer; the
    solver gets the net's absolute path, ``random_seed = seed``, a snapshot prefix inside ``run_dir``, and
    ``solver_overrides`` (field name -> value).
    """
    from google.protobuf import text_format

    net = read_prototxt(net_template, "NetParameter")
    found_phases = set()
    for layer in net.layer:
        if layer.type == "HDF5Data":
            if len(layer.include) != 1:
                raise ValueError(f"{net_template}: HDF5Data layer {layer.name!r} needs exactly one include phase")
            phase = "TRAIN" if layer.include[0].phase == 0 else "TEST"
            if phase not in sources:
                raise ValueError(f"no data source given for the {phase} phase")
            layer.hdf5_data_param.source = str(Path(sources[phase]).resolve())
            found_phases.add(phase)
    if found_phases != set(sources):
        raise ValueError(f"{net_template}: HDF5Data phases {sorted(found_phases)} != given {sorted(sources)}")
    losses = [layer for layer in net.layer if layer.name == LOSS_LAYER_NAME]
    if len(losses) != 1:
        raise ValueError(f"{net_template}: needs exactly one layer named {LOSS_LAYER_NAME!r}. Got: {len(losses)}")
    loss = losses[0]
    loss.type = variant.layer_type
    for field in (*(spec.options_class.proto_param for spec in LOSSES.values()), "param"):
        if field in loss.DESCRIPTOR.fields_by_name:  # a Caffe built before a loss's field lacks it
            loss.ClearField(field)
    given = type(loss)()
    text_format.Merge(variant.layer_params, given)
    if given.bottom:  # a variant that names its bottoms replaces the template's (pair against batch losses)
        loss.ClearField("bottom")
    text_format.Merge(variant.layer_params, loss)

    solver = read_prototxt(solver_template, "SolverParameter")
    run_dir = Path(run_dir).resolve()
    net_path = write_prototxt(net, run_dir / "train_val.prototxt",
                              header=f"Rendered from {net_template} for variant {variant.name}")
    solver.net = str(net_path)
    solver.random_seed = seed
    solver.snapshot_prefix = str(run_dir / "snapshots" / variant.name)
    for field, value in (solver_overrides or {}).items():
        if hasattr(getattr(solver, field), "extend"):  # a repeated field
            del getattr(solver, field)[:]  # e.g. test_iter (one value per test net): the value(s) replace it
            getattr(solver, field).extend(value if isinstance(value, (list, tuple)) else [value])
        else:
            setattr(solver, field, value)
    (run_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    return write_prototxt(solver, run_dir / "solver.prototxt",
                          header=f"Rendered from {solver_template} for variant {variant.name}, seed {seed}")


def train_and_evaluate(caffe_bin: Path, net_template: Path, solver_template: Path, variant: Variant, seed: int,
                       run_dir: Path, sources: dict[str, Path], evaluate: Callable[[Path], dict],
                       solver_overrides: dict | None = None, echo=print) -> dict:
    """Renders, trains with ``caffe train`` and evaluates each snapshot with ``evaluate(weights) -> metrics``.

    Returns a record: variant, seed, wall_seconds (training only), the parsed curves, and per snapshot its
    iteration and metrics (``final`` = those of the last snapshot).
    """
    for stale_weights in (Path(run_dir) / "snapshots").glob("*"):  # a rerun must not mix in old snapshots
        stale_weights.unlink()
    solver_path = render_run(net_template, solver_template, variant, seed, run_dir, sources, solver_overrides)
    prefix = f"[{variant.name} seed {seed}] "
    wall_seconds = run_caffe_train(caffe_bin, solver_path, Path(run_dir) / "train.log", prefix=prefix, echo=echo)
    curves = parse_caffe_log(Path(run_dir) / "train.log")
    snapshots = snapshot_weights(Path(run_dir) / "snapshots" / variant.name)
    if not snapshots:
        raise RuntimeError(f"{prefix}caffe train wrote no snapshot into {run_dir}/snapshots")
    start = time.monotonic()
    evaluated = [{"iteration": iteration, **evaluate(weights)} for iteration, weights in snapshots]
    echo(f"{prefix}trained in {wall_seconds:.1f} s; {len(snapshots)} snapshots evaluated in "
         f"{time.monotonic() - start:.1f} s; final: "
         + ", ".join(f"{key} {value:.4f}" for key, value in evaluated[-1].items() if key != "iteration"))
    return {"variant": variant.name, "label": variant.label, "seed": seed, "wall_seconds": wall_seconds,
            "final_weights": str(snapshots[-1][1]), "curves": asdict(curves), "snapshots": evaluated,
            "final": evaluated[-1]}


def summarise(runs: list[dict], variants: list[Variant], metrics: list[str]) -> list[dict]:
    """Per variant: mean and sample standard deviation over seeds of each final metric and the wall time."""
    rows = []
    for variant in variants:
        mine = [run for run in runs if run["variant"] == variant.name]
        if not mine:
            continue
        row = {"variant": variant.name, "label": variant.label, "seeds": [run["seed"] for run in mine],
               "iterations": mine[0]["final"]["iteration"]}
        for key in [*metrics, "wall_seconds"]:
            values = np.array([run[key] if key == "wall_seconds" else run["final"][key] for run in mine])
            row[key] = {"mean": float(values.mean()),
                        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "values": values.tolist()}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], metrics: dict[str, str], digits: int = 4,
                   percent: tuple[str, ...] = ()) -> str:
    """``metrics``: key -> column title. Cells are mean ± std over the seeds (just the value for one seed);
    metrics named in ``percent`` are shown in percent with two decimals."""
    def cell(stats, places, scale=1.0, unit=""):
        mean, std = scale * stats["mean"], scale * stats["std"]
        if len(stats["values"]) == 1:
            return f"{mean:.{places}f}{unit}"
        return f"{mean:.{places}f} ± {std:.{places}f}{unit}"

    header = ["variant", "seeds", "iterations", *metrics.values(), "train wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], ",".join(map(str, row["seeds"])), str(row["iterations"]),
                 *(cell(row[key], 2, 100.0, " %") if key in percent else cell(row[key], digits)
                   for key in metrics),
                 cell(row["wall_seconds"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(data, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
