#!/usr/bin/env python3
"""HardNet patches: HardNetLoss with the hardest in-batch negative (MIN, anchor_swap) against the same net
and loss with a random in-batch negative (RANDOM), end to end.

Cuts 32x32 patch pairs from scikit-image's photos (Harris keypoints, random homography + photometric change,
as HPatches does; held-out photos never seen in training), trains each variant with the ``caffe train`` CLI,
evaluates every snapshot on the held-out pairs through pycaffe (FPR at 95 % recall, as the HardNet paper
reports; and matching accuracy: the share of reference patches whose nearest warped patch of the same photo
and warp is their own), and draws the figures.

    python models/hardnet_patches/run.py --quick    # 1 seed x 200 iterations per variant
    python models/hardnet_patches/run.py            # 3 seeds x 1000 iterations (the README's numbers)

Needs a Caffe built with our layers: the ``caffe`` binary (--caffe, $CAFFE_MINING_CAFFE_BIN or
$CAFFE_MINING_BUILD_DIR/caffe-build/tools/caffe) and its pycaffe (PYTHONPATH, or found in the same build).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import caffe_mining.examples  # noqa: F401  (installed by scripts/build.sh)
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "python"))

from caffe_mining.examples import metrics, plots  # noqa: E402
from caffe_mining.examples.driver import (RunLengths, example_parser, resolve_arguments, start,  # noqa: E402
                                          train_or_reload, write_results)
from caffe_mining.examples.embedding import DeployNet  # noqa: E402
from caffe_mining.examples.experiment import Variant, markdown_table, summarise  # noqa: E402
from caffe_mining.examples.patches import PatchSet, build_patch_data  # noqa: E402

VARIANTS = [
    Variant("hardnet_min", "HardNetLoss MIN (hardest negative)", "HardNetLoss",
            "hardnet_loss_param { margin: 1 anchor_swap: true batch_reduce: MIN }"),
    Variant("random", "HardNetLoss RANDOM (random negative)", "HardNetLoss",
            "hardnet_loss_param { margin: 1 anchor_swap: true batch_reduce: RANDOM }"),
]
METRICS = {"fpr95": "held-out FPR at 95 % recall (lower is better)",
           "matching_accuracy": "held-out matching accuracy (higher)"}
PERCENT = ("fpr95", "matching_accuracy")
TABLE_COLUMNS = {"fpr95": "FPR95", "matching_accuracy": "matching accuracy"}
TINY_PHOTOS = {"train_photos": ("camera", "brick"), "heldout_photos": ("astronaut",), "max_keypoints": 60,
               "heldout_max_keypoints": 40}


LENGTHS = RunLengths(iterations=1000, snapshot_every=100, quick_iterations=200, quick_snapshot_every=50)


def parse_args(argv=None):
    parser = example_parser(__doc__, "hardnet_patches", VARIANTS, LENGTHS, base_lr=0.1)
    parser.add_argument("--tiny", action="store_true", help="3 photos and few keypoints (for smoke tests; data in "
                        "hardnet_patches-tiny)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of keypoints' warps and pair order")
    args = parser.parse_args(argv)
    return resolve_arguments(args, "hardnet_patches", LENGTHS,
                             data_name="hardnet_patches-tiny" if args.tiny else "hardnet_patches")


class HeldoutPairs:
    """The held-out verification pairs, fixed once: every matching (reference, warped) pair, and as many
    non-matching ones, reference k with the warped patch of another keypoint, half of them from the same
    photo (the harder kind) and half from any photo."""

    def __init__(self, heldout: PatchSet, seed: int = 0):
        rng = np.random.default_rng(seed)
        count = len(heldout)
        other = np.empty(count, dtype=np.int64)
        for k in range(count):
            different = heldout.keypoint_id != heldout.keypoint_id[k]
            if k % 2 == 0:
                same_photo = different & (heldout.photo_index == heldout.photo_index[k])
                different = same_photo if same_photo.any() else different
            other[k] = rng.choice(np.flatnonzero(different))
        self.heldout = heldout
        self.reference_index = np.concatenate([np.arange(count), np.arange(count)])
        self.target_index = np.concatenate([np.arange(count), other])
        self.is_match = np.concatenate([np.ones(count, bool), np.zeros(count, bool)])

    def distances(self, reference_desc: np.ndarray, target_desc: np.ndarray) -> np.ndarray:
        return metrics.pair_distances(reference_desc[self.reference_index], target_desc[self.target_index])

    def evaluate(self, reference_desc: np.ndarray, target_desc: np.ndarray) -> dict:
        distance = self.distances(reference_desc, target_desc)
        heldout = self.heldout
        correct = 0
        for photo in np.unique(heldout.photo_index):
            for warp in np.unique(heldout.warp_index):
                group = (heldout.photo_index == photo) & (heldout.warp_index == warp)
                if group.sum() > 1:
                    correct += group.sum() * metrics.nearest_neighbour_accuracy(
                        reference_desc[group], heldout.keypoint_id[group], target_desc[group],
                        heldout.keypoint_id[group])
        return {"fpr95": metrics.fpr_at_recall(distance, self.is_match, 0.95),
                "matching_accuracy": float(correct / len(heldout))}


def raw_pixel_descriptors(patches: np.ndarray) -> np.ndarray:
    """Per-patch normalised pixels, unit length: what the nets start from (the MVN layer), as a baseline."""
    flat = patches.reshape(len(patches), -1).astype(np.float64)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-9)
    return flat / np.sqrt(flat.shape[1])


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    caffe_bin = start(args)
    data = build_patch_data(args.data_dir, data_seed=args.data_seed, **(TINY_PHOTOS if args.tiny else {}))
    print(f"data: {data.meta['n_train_pairs']} training pairs of {data.meta['n_train_keypoints']} keypoints, "
          f"{data.meta['n_heldout_pairs']} held-out pairs of {data.meta['n_heldout_keypoints']} keypoints")
    heldout = data.heldout
    pairs = HeldoutPairs(heldout)
    raw = pairs.evaluate(raw_pixel_descriptors(heldout.reference), raw_pixel_descriptors(heldout.target))
    print("raw pixels (no training): " + ", ".join(f"{k} {v:.4f}" for k, v in raw.items()))

    deploy = HERE / "deploy.prototxt"
    variants = [v for v in VARIANTS if v.name in args.variants]
    overrides = {"max_iter": args.iterations, "snapshot": args.snapshot_every,
                 "test_interval": args.snapshot_every, "display": max(1, min(25, args.snapshot_every // 2))}

    def describe(weights):
        net = DeployNet(deploy, weights)
        return net(heldout.reference), net(heldout.target)

    def evaluate(weights):
        return pairs.evaluate(*describe(weights))

    runs, settings = train_or_reload(args, caffe_bin, HERE, variants,
                                     {"TRAIN": data.train_list, "TEST": data.heldout_list}, evaluate, overrides)
    summary = summarise(runs, variants, list(METRICS))
    table = markdown_table(summary, TABLE_COLUMNS, percent=PERCENT)
    labels = {v.name: v.label for v in variants}
    results = args.results
    plots.plot_loss_curves(runs, labels, results / "loss_curves.png", test_output="heldout_hardnet",
                           test_title="held-out HardNet loss, hardest negative (Caffe TEST phase)",
                           log_scale=False)
    plots.plot_metric_curves(runs, labels, METRICS, results / "heldout_metrics.png",
                             reference={key: ("raw pixels", value) for key, value in raw.items()})
    shown_seed, shown_iteration = runs[0]["seed"], runs[0]["final"]["iteration"]
    first_seed = {run["variant"]: run for run in runs if run["seed"] == shown_seed}
    raw_reference, raw_target = raw_pixel_descriptors(heldout.reference), raw_pixel_descriptors(heldout.target)
    descriptors = {"raw pixels": (raw_reference, raw_target)}
    for variant in variants:
        descriptors[variant.label.split(" (")[0]] = describe(first_seed[variant.name]["final_weights"])
    plots.plot_distance_histograms({label: (pairs.distances(*pair), pairs.is_match)
                                    for label, pair in descriptors.items()}, results / "distances.png",
                                   title=f"held-out pair distances (seed {shown_seed}, "
                                         f"iteration {shown_iteration})")
    # 10 held-out keypoints with all their warps: reference patches (dots) and warped ones (crosses)
    ids, counts = np.unique(heldout.keypoint_id, return_counts=True)
    shown = ids[counts == counts.max()][:: max(1, len(ids[counts == counts.max()]) // 10)][:10]
    rows = np.flatnonzero(np.isin(heldout.keypoint_id, shown))
    first_rows = rows[np.unique(heldout.keypoint_id[rows], return_index=True)[1]]
    classes = np.concatenate([heldout.keypoint_id[first_rows], heldout.keypoint_id[rows]])
    crossed = np.concatenate([np.zeros(len(first_rows), bool), np.ones(len(rows), bool)])
    plots.plot_projections({label: np.concatenate([reference[first_rows], target[rows]])
                            for label, (reference, target) in descriptors.items()}, classes,
                           results / "projection.png", markers=crossed, legend_title="keypoint id",
                           title="10 held-out keypoints: reference patch (dot) and its warps (crosses), PCA")
    write_results("hardnet_patches", args, {"settings": settings, "data": data.meta, "raw_pixels": raw,
                                            "summary": summary, "runs": runs}, table, raw, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
