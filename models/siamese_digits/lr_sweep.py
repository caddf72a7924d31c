#!/usr/bin/env python3
"""Learning-rate control for the siamese digits example: is mining's gain the mining, or the step size?

MiningContrastiveLoss averages the picked pairs' cost over 2K = 2N / mining_ratio, Caffe's ContrastiveLoss
over 2N: at one base_lr, each picked pair of mining_ratio 4 moves the weights 4 times as far as in the
baseline. This script trains the baseline and mining_ratio 4 at several base_lr (3 seeds each, through
run.py) and plots the final held-out FPR95 against base_lr and against the step per pair (base_lr x ratio).

    python models/siamese_digits/lr_sweep.py             # 2 variants x 3 rates x 3 seeds x 5000 iterations
    python models/siamese_digits/lr_sweep.py --plot-only # redraw from the results already there

Each (variant, rate) keeps run.py's layout under <out>/<variant>-lr<rate>/ (runs, and results/results.json);
an existing results.json is reused, not retrained.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (models/siamese_digits/run.py)

from caffe_mining.examples.caffe_run import cache_dir  # noqa: E402
from caffe_mining.examples.plots import shrink_png  # noqa: E402

GRID = {"contrastive": (1, [0.01, 0.04, 0.16]), "mining4": (4, [0.0025, 0.01, 0.04])}


def final_metrics(results_json: Path, variant: str) -> dict[str, list[float]]:
    runs = [r for r in json.loads(results_json.read_text())["runs"] if r["variant"] == variant]
    return {key: [r["final"][key] for r in runs] for key in ("fpr95", "roc_auc", "nn_accuracy")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=cache_dir() / "runs" / "siamese_digits-lr_sweep")
    parser.add_argument("--results", type=Path, default=None, help="where learning_rate.png and "
                        "learning_rate.md go (default <out>)")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--caffe", help="the caffe binary (passed to run.py)")
    args = parser.parse_args(argv)
    results_dir = (args.results or args.out).resolve()
    rows = []
    for variant, (ratio, rates) in GRID.items():
        for rate in rates:
            folder = args.out / f"{variant}-lr{rate:g}"
            results_json = folder / "results" / "results.json"
            if not results_json.exists():
                if args.plot_only:
                    raise SystemExit(f"lr_sweep: {results_json} is missing (run without --plot-only)")
                run.main(["--variants", variant, "--base-lr", str(rate), "--out", str(folder)]
                         + (["--caffe", args.caffe] if args.caffe else []))
            rows.append({"variant": variant, "ratio": ratio, "base_lr": rate,
                         **final_metrics(results_json, variant)})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {v.name: v.label for v in run.VARIANTS}
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharey=True)
    for axis, per_pair in zip(axes, (False, True)):
        for index, variant in enumerate(GRID):
            mine = [row for row in rows if row["variant"] == variant]
            x = [row["base_lr"] * (row["ratio"] if per_pair else 1) for row in mine]
            y = [100 * np.mean(row["fpr95"]) for row in mine]
            err = [100 * np.std(row["fpr95"], ddof=1) for row in mine]
            axis.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{0 if index == 0 else 2}",
                          label=labels[variant])
        axis.set_xscale("log")
        axis.set_xlabel("base_lr x mining_ratio (step per picked pair)" if per_pair else "base_lr")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("held-out FPR95 (%), 5000 iterations")
    figure.suptitle("siamese digits: final FPR95 against the learning rate (mean ± std, 3 seeds)", fontsize=10)
    figure.tight_layout()
    results_dir.mkdir(parents=True, exist_ok=True)
    figure.savefig(results_dir / "learning_rate.png", dpi=80)
    shrink_png(results_dir / "learning_rate.png")

    lines = ["| variant | base_lr | base_lr x ratio | ROC AUC | FPR95 | 1-NN accuracy |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        def cell(key, scale=1.0, places=4, unit=""):
            values = scale * np.array(row[key])
            return f"{values.mean():.{places}f} ± {values.std(ddof=1):.{places}f}{unit}"
        lines.append(f"| {labels[row['variant']]} | {row['base_lr']:g} | {row['base_lr'] * row['ratio']:g} | "
                     f"{cell('roc_auc')} | {cell('fpr95', 100, 2, ' %')} | {cell('nn_accuracy', 100, 2, ' %')} |")
    (results_dir / "learning_rate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
