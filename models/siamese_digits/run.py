#!/usr/bin/env python3
"""Siamese digits: Caffe's ContrastiveLoss against MiningContrastiveLoss (mining_ratio 2 and 4), end to end.

Builds the pair databases of scikit-learn's 8x8 digits (held-out digits never seen in training), trains each
variant with the ``caffe train`` CLI, evaluates every snapshot on the held-out digits through pycaffe (pair
verification ROC AUC and FPR at 95 % recall over all held-out pairs, leave-one-out nearest-neighbour
accuracy), and draws the figures.

    python models/siamese_digits/run.py --quick     # 1 seed x 2000 iterations per variant: a few minutes
    python models/siamese_digits/run.py             # 3 seeds x 5000 iterations (the README's numbers)

Needs a Caffe built with our layers: the ``caffe`` binary (--caffe, $CAFFE_MINING_CAFFE_BIN or
$CAFFE_MINING_BUILD_DIR/caffe-build/tools/caffe) and its pycaffe (PYTHONPATH, or found in the same build).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import caffe_mining.examples  # noqa: F401  (installed by scripts/build.sh)
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "python"))

from caffe_mining.examples import metrics, plots  # noqa: E402
from caffe_mining.examples.caffe_run import cache_dir, data_dir, find_caffe_binary, import_pycaffe  # noqa: E402
from caffe_mining.examples.digits import build_digits_data  # noqa: E402
from caffe_mining.examples.embedding import DeployNet  # noqa: E402
from caffe_mining.examples.experiment import (Variant, markdown_table, summarise, train_and_evaluate,  # noqa: E402
                                              write_json)

VARIANTS = [
    Variant("contrastive", "ContrastiveLoss (baseline)", "ContrastiveLoss", "contrastive_loss_param { margin: 1 }"),
    Variant("mining2", "MiningContrastiveLoss, ratio 2", "MiningContrastiveLoss",
            "contrastive_loss_param { margin: 1 mining_ratio: 2 }"),
    Variant("mining4", "MiningContrastiveLoss, ratio 4", "MiningContrastiveLoss",
            "contrastive_loss_param { margin: 1 mining_ratio: 4 }"),
]
METRICS = {"roc_auc": "held-out ROC AUC (higher is better)", "fpr95": "held-out FPR at 95 % recall (lower)",
           "nn_accuracy": "held-out 1-NN accuracy (higher)"}
PERCENT = ("fpr95", "nn_accuracy")
TABLE_COLUMNS = {"roc_auc": "ROC AUC", "fpr95": "FPR95", "nn_accuracy": "1-NN accuracy"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2000 iterations, snapshots every 250")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 1 2 3; --quick: 1)")
    parser.add_argument("--iterations", type=int, help="max_iter (default 5000; --quick: 2000)")
    parser.add_argument("--snapshot-every", type=int, help="iterations between evaluated snapshots "
                        "(default 500; --quick: 250)")
    parser.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS],
                        default=[v.name for v in VARIANTS])
    parser.add_argument("--train-pairs", type=int, default=50000, help="training pairs in the database")
    parser.add_argument("--similar-fraction", type=float, default=None,
                        help="share of similar training pairs (default: random pairs, about 10 %% similar)")
    parser.add_argument("--base-lr", type=float, help="the solver's base_lr (default: solver.prototxt's, 0.01)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the split and the pairs")
    parser.add_argument("--data-dir", type=Path, default=data_dir("siamese_digits"),
                        help="default $CAFFE_MINING_DATA/siamese_digits or ~/.cache/caffe-mining/data/siamese_digits")
    parser.add_argument("--out", type=Path, help="runs folder (default ~/.cache/caffe-mining/runs/"
                        "siamese_digits[-quick])")
    parser.add_argument("--results", type=Path, help="where results.json, results.md and the PNGs go "
                        "(default <out>/results)")
    parser.add_argument("--caffe", help="the caffe binary (default $CAFFE_MINING_CAFFE_BIN, then the build)")
    parser.add_argument("--replot", action="store_true", help="no training: redraw the figures from "
                        "<results>/results.json and the snapshots it names")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    args.iterations = args.iterations or (2000 if args.quick else 5000)
    args.snapshot_every = args.snapshot_every or (250 if args.quick else 500)
    args.out = (args.out or cache_dir() / "runs" /
                ("siamese_digits-quick" if args.quick else "siamese_digits")).resolve()
    args.results = (args.results or args.out / "results").resolve()
    return args


def embedding_metrics(embedding, labels) -> dict:
    """Verification over every unordered pair of held-out digits, and leave-one-out 1-NN accuracy."""
    first, second = metrics.upper_triangle_pairs(len(labels))
    distance = metrics.pair_distances(embedding[first], embedding[second])
    same = labels[first] == labels[second]
    return {"roc_auc": metrics.roc_auc(distance, same), "fpr95": metrics.fpr_at_recall(distance, same, 0.95),
            "nn_accuracy": metrics.nearest_neighbour_accuracy(embedding, labels)}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    caffe_bin = find_caffe_binary(args.caffe)
    import_pycaffe()  # fail early, before any training, when pycaffe is missing
    print(f"caffe: {caffe_bin}\nruns: {args.out}\nresults: {args.results}")
    data = build_digits_data(args.data_dir, data_seed=args.data_seed, n_train_pairs=args.train_pairs,
                             similar_fraction=args.similar_fraction)
    print(f"data: {data.meta['n_train_samples']} training / {data.meta['n_heldout_samples']} held-out digits, "
          f"{data.meta['n_train_pairs']} training pairs ({100 * data.meta['train_similar_share']:.1f} % similar)")
    raw = embedding_metrics(data.heldout_images.reshape(len(data.heldout_images), -1), data.heldout_labels)
    print("raw pixels (no training): " + ", ".join(f"{k} {v:.4f}" for k, v in raw.items()))

    deploy = HERE / "deploy.prototxt"
    variants = [v for v in VARIANTS if v.name in args.variants]
    overrides = {"max_iter": args.iterations, "snapshot": args.snapshot_every,
                 "test_interval": min(500, args.snapshot_every),
                 "display": max(1, min(100, args.snapshot_every // 2))}
    if args.base_lr:
        overrides["base_lr"] = args.base_lr

    def evaluate(weights):
        return embedding_metrics(DeployNet(deploy, weights)(data.heldout_images), data.heldout_labels)

    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    if args.replot:
        stored = json.loads((args.results / "results.json").read_text())
        runs, settings = [run for run in stored["runs"] if run["variant"] in args.variants], stored["settings"]
    else:
        runs = [train_and_evaluate(caffe_bin, HERE / "train_val.prototxt", HERE / "solver.prototxt", variant,
                                   seed, args.out / f"{variant.name}-seed{seed}",
                                   {"TRAIN": data.train_list, "TEST": data.heldout_list}, evaluate, overrides)
                for seed in args.seeds for variant in variants]
    summary = summarise(runs, variants, list(METRICS))
    table = markdown_table(summary, TABLE_COLUMNS, percent=PERCENT)
    labels = {v.name: v.label for v in variants}
    results = args.results
    plots.plot_loss_curves(runs, labels, results / "loss_curves.png", test_output="heldout_contrastive",
                           test_title="held-out contrastive loss, all pairs (Caffe TEST phase)")
    plots.plot_metric_curves(runs, labels, METRICS, results / "heldout_metrics.png",
                             reference={key: ("raw pixels", value) for key, value in raw.items()},
                             log_scale=("fpr95",))
    shown_seed, shown_iteration = runs[0]["seed"], runs[0]["final"]["iteration"]
    first_seed = {run["variant"]: run for run in runs if run["seed"] == shown_seed}
    projections = {"raw pixels": data.heldout_images.reshape(len(data.heldout_images), -1)}
    for variant in variants:
        projections[variant.label] = DeployNet(deploy, first_seed[variant.name]["final_weights"])(data.heldout_images)
    plots.plot_projections(projections, data.heldout_labels, results / "projection.png", legend_title="digit",
                           title=f"held-out digits, PCA of the embeddings (seed {shown_seed}, "
                                 f"iteration {shown_iteration})")
    write_json({"example": "siamese_digits", "settings": settings,
                "data": data.meta, "raw_pixels": raw, "summary": summary, "runs": runs},
               results / "results.json")
    (results / "results.md").write_text(table + "\n")
    print("\nraw pixels: " + ", ".join(f"{k} {v:.4f}" for k, v in raw.items()))
    print(table)
    print(f"\nfigures and results.json in {results}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
