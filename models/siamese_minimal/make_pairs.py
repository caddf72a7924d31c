#!/usr/bin/env python3
"""Make the pair data of the minimal siamese model: sklearn's 8x8 digits -> pairs in HDF5.

Writes <data-dir>/pairs.h5 with the datasets Caffe's HDF5Data layer reads:
  data    (N, 1, 8, 8) float32, first image of each pair, pixels scaled to [0, 1]
  data_p  (N, 1, 8, 8) float32, second image
  sim     (N,)         float32, 1 = same digit, 0 = different digits (about half each)
and models/siamese_minimal/pairs_h5_list.txt, the list file the net's HDF5Data layer reads (relative to the
repository root, where `caffe train` runs). The data never goes inside the repository.

Example (from the repository root):
  ~/.cache/caffe-mining/venv/bin/python models/siamese_minimal/make_pairs.py
  caffe train --solver=models/siamese_minimal/solver.prototxt
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


def make_pairs(num_pairs, seed):
    """Random pairs of digits, half of them of the same class."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    first = rng.integers(0, len(labels), size=num_pairs)
    similar = rng.random(num_pairs) < 0.5
    second = np.empty(num_pairs, dtype=np.int64)
    for n, (i, same) in enumerate(zip(first, similar)):
        if same:
            second[n] = rng.choice(by_class[labels[i]])
        else:
            other = (labels[i] + rng.integers(1, 10)) % 10
            second[n] = rng.choice(by_class[other])
    return images[first], images[second], similar.astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data_dir("siamese_minimal"),
                        help="where pairs.h5 goes (default: $CAFFE_MINING_DATA/siamese_minimal, "
                             "else $CAFFE_MINING_CACHE/data/siamese_minimal)")
    parser.add_argument("--pairs", type=int, default=2048, help="number of pairs (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")

    data, data_p, sim = make_pairs(args.pairs, args.seed)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    h5_path = (args.data_dir / "pairs.h5").resolve()
    with h5py.File(h5_path, "w") as f:
        f["data"] = data
        f["data_p"] = data_p
        f["sim"] = sim
    LIST_FILE.write_text(f"{h5_path}\n")
    print(f"wrote {len(sim)} pairs ({int(sim.sum())} similar) to {h5_path}")
    print(f"wrote {LIST_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
