#!/usr/bin/env python3
"""Make the data of the minimal HardNet model: sklearn's 8x8 digits -> matching pairs in HDF5.

Each pair is an image (the anchor) and the same image with added noise, optionally shifted (the positive).
Every source image is used several times, so a batch can hold two pairs of one image: their label (the source
image's id) keeps HardNetLoss from taking one as the other's negative. Writes <data-dir>/pairs.h5 with the
datasets Caffe's HDF5Data layer reads:
  anchor    (N, 1, 8, 8) float32, pixels scaled to [0, 1]
  positive  (N, 1, 8, 8) float32
  label     (N,)         float32, id of the source image
and models/hardnet_minimal/pairs_h5_list.txt, the list file (holding the absolute path of pairs.h5) that the
net's HDF5Data layer names relative to the repository root, where `caffe train` runs. The data itself never goes
inside the repository.

Example (from the repository root):
  ~/.cache/caffe-mining/venv/bin/python models/hardnet_minimal/make_data.py
  caffe train --solver=models/hardnet_minimal/solver.prototxt
"""
import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
from sklearn.datasets import load_digits

from caffe_mining.examples.caffe_run import data_dir

HERE = Path(__file__).resolve().parent
LIST_FILE = HERE / "pairs_h5_list.txt"


def jitter(image, rng, noise, max_shift):
    """The image shifted by up to max_shift pixels along each axis (zero fill) plus Gaussian noise, clipped to
    [0, 1]."""
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    shifted = np.zeros_like(image)
    h, w = image.shape
    shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return np.clip(shifted + rng.normal(0.0, noise, size=image.shape), 0.0, 1.0)


def make_pairs(num_pairs, num_sources, noise, max_shift, seed):
    """num_pairs (anchor, positive, source id) triples drawn from num_sources random digit images."""
    images = (load_digits().images / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    sources = rng.choice(len(images), size=min(num_sources, len(images)), replace=False)
    picks = rng.choice(sources, size=num_pairs)
    anchor = images[picks]
    positive = np.stack([jitter(images[i], rng, noise, max_shift) for i in picks]).astype(np.float32)
    return anchor[:, None], positive[:, None], picks.astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data_dir("hardnet_minimal"),
                        help="where pairs.h5 goes (default: $CAFFE_MINING_DATA/hardnet_minimal, "
                             "else $CAFFE_MINING_CACHE/data/hardnet_minimal)")
    parser.add_argument("--pairs", type=int, default=2048, help="number of pairs (default 2048)")
    parser.add_argument("--sources", type=int, default=1000,
                        help="number of distinct source images (default 1000)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise std of the positives (default 0.1)")
    parser.add_argument("--max-shift", type=int, default=0,
                        help="largest shift of the positives in pixels (default 0: a shift makes the tiny MLP "
                             "collapse under hardest-negative mining)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.pairs < 2:
        parser.error(f"--pairs must be >= 2, got {args.pairs}")
    if args.sources < 2:
        parser.error(f"--sources must be >= 2, got {args.sources}")
    if not 0 <= args.max_shift < 8:
        parser.error(f"--max-shift must be in [0, 7], got {args.max_shift}")
    if args.noise < 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")

    anchor, positive, label = make_pairs(args.pairs, args.sources, args.noise, args.max_shift, args.seed)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    h5_path = (args.data_dir / "pairs.h5").resolve()
    with h5py.File(h5_path, "w") as f:
        f["anchor"] = anchor
        f["positive"] = positive
        f["label"] = label
    LIST_FILE.write_text(f"{h5_path}\n")
    print(f"wrote {len(label)} pairs of {len(np.unique(label))} source images to {h5_path}")
    print(f"wrote {LIST_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
