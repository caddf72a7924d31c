#!/usr/bin/env python3
"""Embedding digits: metric-learning losses on unseen classes (zero-shot retrieval), end to end.

Trains one tower (8x8 digit -> 128 -> ReLU -> 32 -> L2 normalisation) on scikit-learn's digits 0-6 with
P x K batches (7 digits x 8 images, laid out in HDF5 files read in order), once per loss:
MarginLoss (distance-weighted and uniform sampling, beta learnt), TripletLoss (batch hard, batch all,
semi-hard), Caffe's ContrastiveLoss and MiningContrastiveLoss (on pairs of the same batches). Every variant is
trained with the ``caffe train`` CLI at each learning rate of --learning-rates (the step-size control) and
each seed, and every snapshot is measured on the digits 7-9 it never saw, as "Sampling Matters" measures:
Recall@1 and Recall@4 of leave-one-out retrieval among the held-out digits, and FPR95 over all held-out pairs.

    python models/embedding_digits/run.py --quick     # 1 seed, base_lr 0.01, 600 iterations: 20 s
    python models/embedding_digits/run.py             # 3 seeds x 3 rates x 2000 iterations: 3 minutes (the README's)

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

import numpy as np  # noqa: E402

from caffe_mining.examples import metrics, plots  # noqa: E402
from caffe_mining.examples.caffe_run import import_pycaffe  # noqa: E402
from caffe_mining.examples.digits_classes import build_class_split_digits  # noqa: E402
from caffe_mining.examples.driver import RunLengths, example_parser, resolve_arguments, start  # noqa: E402
from caffe_mining.examples.embedding import DeployNet  # noqa: E402
from caffe_mining.examples.experiment import (Variant, markdown_table, summarise, train_and_evaluate,  # noqa: E402
                                              write_json)

LENGTHS = RunLengths(iterations=2000, snapshot_every=200, quick_iterations=600, quick_snapshot_every=200)
LEARNING_RATES = (0.002, 0.01, 0.05)
#: beta's own step, lr_mult * base_lr, as margin_loss_layer.hpp documents it: 0.1 / N (N the batch size).
BETA_STEP_PER_SAMPLE = 0.1
PAIRS = 'bottom: "embedding_a" bottom: "embedding_b" bottom: "sim" '
#: name -> (label, layer type, parameters); MarginLoss's beta param is added per learning rate.
LOSSES = {
    "margin_dw": ("MarginLoss, distance-weighted", "MarginLoss", "margin_loss_param { sampler: DISTANCE_WEIGHTED }"),
    "margin_uniform": ("MarginLoss, uniform", "MarginLoss", "margin_loss_param { sampler: UNIFORM }"),
    "triplet_hard": ("TripletLoss, batch hard", "TripletLoss", "triplet_loss_param { mining: BATCH_HARD }"),
    "triplet_all": ("TripletLoss, batch all", "TripletLoss", "triplet_loss_param { mining: BATCH_ALL }"),
    "triplet_semihard": ("TripletLoss, semi-hard", "TripletLoss", "triplet_loss_param { mining: SEMI_HARD }"),
    "contrastive": ("ContrastiveLoss (pairs)", "ContrastiveLoss", PAIRS + "contrastive_loss_param { margin: 1 }"),
    "mining2": ("MiningContrastiveLoss, ratio 2", "MiningContrastiveLoss",
                PAIRS + "contrastive_loss_param { margin: 1 mining_ratio: 2 }"),
}
METRICS = {"recall_at_1": "held-out Recall@1 (higher is better)", "recall_at_4": "held-out Recall@4 (higher)",
           "fpr95": "held-out FPR at 95 % recall (lower)"}
PERCENT = ("recall_at_1", "recall_at_4", "fpr95")
TABLE_COLUMNS = {"recall_at_1": "R@1", "recall_at_4": "R@4", "fpr95": "FPR95"}


def variants(base_lr: float, batch_size: int, beta_step: float) -> list[Variant]:
    """The loss variants at one base_lr: MarginLoss's beta gets lr_mult = beta_step / (N base_lr), so that
    its step is the same at every base_lr (and no weight decay)."""
    beta = f"param {{ lr_mult: {beta_step / (batch_size * base_lr):.6g} decay_mult: 0 }} "
    return [Variant(name, label, layer_type, (beta if layer_type == "MarginLoss" else "") + params)
            for name, (label, layer_type, params) in LOSSES.items()]


def parse_args(argv=None):
    parser = example_parser(__doc__, "embedding_digits", variants(1.0, 1, 1.0), LENGTHS, base_lr=LEARNING_RATES[1])
    parser.add_argument("--learning-rates", type=float, nargs="+",
                        help=f"base_lr values, each variant trained at each (default {LEARNING_RATES}; "
                             f"--quick: {LEARNING_RATES[1]}; --base-lr X: just X)")
    parser.add_argument("--beta-step", type=float, default=BETA_STEP_PER_SAMPLE,
                        help="MarginLoss's beta step times the batch size (default %(default)g: the layer's "
                             "documented working default, lr_mult * base_lr = 0.1 / N)")
    parser.add_argument("--classes-per-batch", type=int, default=7, help="P (default %(default)s)")
    parser.add_argument("--samples-per-class", type=int, default=8, help="K, a multiple of 4 (default %(default)s)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the batch order (default %(default)s)")
    args = resolve_arguments(parser.parse_args(argv), "embedding_digits", LENGTHS)
    args.learning_rates = ([args.base_lr] if args.base_lr else args.learning_rates
                           or ([LEARNING_RATES[1]] if args.quick else list(LEARNING_RATES)))
    return args


def embedding_metrics(embedding: np.ndarray, labels: np.ndarray) -> dict:
    """Recall@1, Recall@4 (leave-one-out retrieval) and FPR95 over every unordered pair."""
    recall = metrics.recall_at_k(embedding, labels, (1, 4))
    first, second = metrics.upper_triangle_pairs(len(labels))
    distance = metrics.pair_distances(embedding[first], embedding[second])
    return {"recall_at_1": recall[1], "recall_at_4": recall[4],
            "fpr95": metrics.fpr_at_recall(distance, labels[first] == labels[second], 0.95)}


def loss_blob(weights: Path) -> list[float]:
    """The values of the ``loss`` layer's first blob in a snapshot (MarginLoss's beta; [] for other losses)."""
    caffe = import_pycaffe()
    net = caffe.proto.caffe_pb2.NetParameter()
    net.ParseFromString(Path(weights).read_bytes())
    for layer in net.layer:
        if layer.name == "loss" and layer.blobs:
            return list(layer.blobs[0].data)
    return []


def lr_tag(base_lr: float) -> str:
    return f"lr{base_lr:g}"


def train_all(args, caffe_bin: Path, data, evaluate) -> list[dict]:
    runs = []
    overrides = {"max_iter": args.iterations, "snapshot": args.snapshot_every, "test_iter": data.heldout_batches,
                 "test_interval": args.snapshot_every, "display": max(1, min(100, args.snapshot_every // 2))}
    for base_lr in args.learning_rates:
        chosen = [v for v in variants(base_lr, data.batch_size, args.beta_step) if v.name in args.variants]
        for seed in args.seeds:
            for variant in chosen:
                run = train_and_evaluate(caffe_bin, HERE / "train_val.prototxt", HERE / "solver.prototxt", variant,
                                         seed, args.out / lr_tag(base_lr) / f"{variant.name}-seed{seed}",
                                         {"TRAIN": data.train_list, "TEST": data.heldout_list}, evaluate,
                                         {**overrides, "base_lr": base_lr})
                runs.append({**run, "base_lr": base_lr, "layer_params": variant.layer_params})
    return runs


def train_nothing(args, caffe_bin: Path, data, evaluate) -> list[dict]:
    """The tower as each seed initialises it (``caffe train`` with max_iter 0 and no periodic snapshot saves the
    fillers' weights as iteration 0): the reference for what training on digits 0-6 does to the unseen 7-9."""
    template = variants(LEARNING_RATES[1], data.batch_size, args.beta_step)[2]
    return [train_and_evaluate(caffe_bin, HERE / "train_val.prototxt", HERE / "solver.prototxt", template, seed,
                               args.out / "initialisation" / f"seed{seed}",
                               {"TRAIN": data.train_list, "TEST": data.heldout_list}, evaluate,
                               {"max_iter": 0, "snapshot": 0, "test_iter": data.heldout_batches})
            for seed in args.seeds]


def plot_learning_rates(summaries: dict[float, list[dict]], path: Path, references: dict[str, dict]) -> None:
    """Final R@1 and FPR95 (mean ± std over seeds) of every variant against base_lr; ``references``: label ->
    metrics drawn as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10.0, 3.6))
    for axis, key in zip(axes, ("recall_at_1", "fpr95")):
        for index, name in enumerate(LOSSES):
            points = [(lr, row[key]) for lr, rows in summaries.items() for row in rows if row["variant"] == name]
            if not points:
                continue
            axis.errorbar([lr for lr, _ in points], [100 * s["mean"] for _, s in points],
                          yerr=[100 * s["std"] for _, s in points], marker="o", capsize=3, color=f"C{index}",
                          label=LOSSES[name][0])
        for style, (label, values) in zip(("--", ":"), references.items()):
            axis.axhline(100 * values[key], color="grey", linestyle=style, linewidth=1, label=label)
        axis.set_xscale("log")
        axis.set_xticks(list(summaries), [f"{lr:g}" for lr in summaries])
        axis.minorticks_off()
        axis.set_xlabel("base_lr")
        axis.set_ylabel(f"{METRICS[key]} (%)", fontsize=8)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("embedding digits: final held-out metrics against the learning rate (mean ± std over seeds)",
                    fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=plots.DPI)
    plt.close(figure)
    plots.shrink_png(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    caffe_bin = start(args)
    data = build_class_split_digits(args.data_dir, min_train_batches=args.iterations,
                                    classes_per_batch=args.classes_per_batch,
                                    samples_per_class=args.samples_per_class, data_seed=args.data_seed)
    print(f"data: {data.meta['n_train_samples']} training digits (0-6), {data.meta['n_heldout_samples']} held-out "
          f"(7-9); {data.meta['train_batches']} training batches of {data.batch_size} "
          f"({data.meta['train_epochs']} epochs)")
    flat = lambda images: images.reshape(len(images), -1)  # noqa: E731
    raw = embedding_metrics(flat(data.heldout_images), data.heldout_labels)
    print("standardised pixels (no training): " + ", ".join(f"{k} {v:.4f}" for k, v in raw.items()))
    deploy = HERE / "deploy.prototxt"

    def evaluate(weights):
        found = embedding_metrics(DeployNet(deploy, weights)(data.heldout_images), data.heldout_labels)
        beta = loss_blob(weights)
        return {**found, **({"beta": beta[0]} if beta else {})}

    if args.replot:
        import json

        stored = json.loads((args.results / "results.json").read_text())
        runs, settings, initial = stored["runs"], stored["settings"], stored["initialisation"]
    else:
        initial = train_nothing(args, caffe_bin, data, evaluate)
        runs = train_all(args, caffe_bin, data, evaluate)
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    learning_rates = sorted({run["base_lr"] for run in runs})
    labels = {name: label for name, (label, _, _) in LOSSES.items() if any(r["variant"] == name for r in runs)}
    shown = [Variant(name, label, "", "") for name, label in labels.items()]
    summaries = {lr: summarise([r for r in runs if r["base_lr"] == lr], shown, list(METRICS)) for lr in learning_rates}
    tables = [f"base_lr {lr:g}\n\n" + markdown_table(summaries[lr], TABLE_COLUMNS, percent=PERCENT)
              for lr in learning_rates]
    raw_row = ("| standardised pixels (no training) | – | – | "
               + " | ".join(f"{100 * raw[k]:.2f} %" for k in TABLE_COLUMNS) + " | – |")
    initial_stats = {key: np.array([run["final"][key] for run in initial]) for key in TABLE_COLUMNS}
    initial_row = (f"| tower at initialisation (no training) | {','.join(str(run['seed']) for run in initial)} | 0 | "
                   + " | ".join(f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1) if len(v) > 1 else 0:.2f} %"
                                for v in initial_stats.values()) + " | – |")
    table = "\n\n".join(tables) + "\n\nreferences (held-out digits 7-9):\n\n" + "\n".join(
        tables[0].splitlines()[2:4]) + "\n" + raw_row + "\n" + initial_row

    results = args.results
    for lr in learning_rates:
        at_lr = [r for r in runs if r["base_lr"] == lr]
        suffix = "" if len(learning_rates) == 1 else f"_{lr_tag(lr)}"
        plots.plot_loss_curves(at_lr, labels, results / f"loss_curves{suffix}.png", test_output="heldout_batch_hard",
                               test_title="held-out batch-hard triplet loss (Caffe TEST phase)")
        plots.plot_metric_curves(at_lr, labels, METRICS, results / f"heldout_metrics{suffix}.png",
                                 reference={key: ("standardised pixels", value) for key, value in raw.items()},
                                 log_scale=("fpr95",))
    margin_runs = [dict(r, variant=f"{r['variant']}@{lr_tag(r['base_lr'])}") for r in runs if "beta" in r["final"]]
    if margin_runs:
        beta_labels = {f"{name}@{lr_tag(lr)}": f"{labels[name]}, base_lr {lr:g}" for lr in learning_rates
                       for name in labels if LOSSES[name][1] == "MarginLoss"}
        plots.plot_metric_curves(margin_runs, beta_labels, {"beta": "MarginLoss: learnt beta"}, results / "beta.png",
                                 reference={"beta": ("beta_init", 1.2)})
    shown_lr = max(learning_rates, key=lambda lr: np.mean([row["recall_at_1"]["mean"] for row in summaries[lr]]))
    shown_seed = min(args.seeds if not args.replot else {r["seed"] for r in runs})
    projections = {"standardised pixels": flat(data.heldout_images)}
    for run in runs:
        if run["base_lr"] == shown_lr and run["seed"] == shown_seed:
            projections[run["label"]] = DeployNet(deploy, run["final_weights"])(data.heldout_images)
    plots.plot_projections(projections, data.heldout_labels, results / "projection.png", legend_title="digit",
                           columns=4, title=f"held-out digits 7-9, PCA of the embeddings (seed {shown_seed}, "
                                            f"base_lr {shown_lr:g}, iteration {runs[0]['final']['iteration']})")
    if len(learning_rates) > 1:
        initial_mean = {key: float(values.mean()) for key, values in initial_stats.items()}
        plot_learning_rates(summaries, results / "learning_rate.png",
                            {"standardised pixels": raw, "tower at initialisation (mean)": initial_mean})
    write_json({"example": "embedding_digits", "settings": settings, "data": data.meta, "raw_pixels": raw,
                "summaries": {str(lr): rows for lr, rows in summaries.items()}, "initialisation": initial,
                "runs": runs},
               results / "results.json")
    (results / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nfigures and results.json in {results}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
