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

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import caffe_mining.examples  # noqa: F401  (installed by scripts/build.sh)
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "python"))

from caffe_mining.examples import metrics, plots  # noqa: E402
from caffe_mining.examples.digits import build_digits_data  # noqa: E402
from caffe_mining.examples.driver import (RunLengths, example_parser, resolve_arguments, start,  # noqa: E402
                                          train_or_reload, write_results)
from caffe_mining.examples.embedding import DeployNet  # noqa: E402
from caffe_mining.examples.experiment import Variant, markdown_table, summarise  # noqa: E402

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


LENGTHS = RunLengths(iterations=5000, snapshot_every=500, quick_iterations=2000, quick_snapshot_every=250)


def parse_args(argv=None):
    parser = example_parser(__doc__, "siamese_digits", VARIANTS, LENGTHS, base_lr=0.01)
    parser.add_argument("--train-pairs", type=int, default=50000, help="training pairs in the database")
    parser.add_argument("--similar-fraction", type=float, default=None,
                        help="share of similar training pairs (default: random pairs, about 10 %% similar)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the split and the pairs")
    return resolve_arguments(parser.parse_args(argv), "siamese_digits", LENGTHS)


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
    caffe_bin = start(args)
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

    def evaluate(weights):
        return embedding_metrics(DeployNet(deploy, weights)(data.heldout_images), data.heldout_labels)

    runs, settings = train_or_reload(args, caffe_bin, HERE, variants,
                                     {"TRAIN": data.train_list, "TEST": data.heldout_list}, evaluate, overrides)
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
    write_results("siamese_digits", args, {"settings": settings, "data": data.meta, "raw_pixels": raw,
                                           "summary": summary, "runs": runs}, table, raw, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
