"""scikit-learn's 8x8 handwritten digits (1797 images, shipped inside scikit-learn: no download) as pair
databases for a siamese net.

The split is by sample and stratified by class: every held-out image is one the net never sees in training
(the set has no duplicate images, which the tests check). Training pairs are drawn like Caffe's MNIST siamese
example draws them, two random images each (about 10 % similar pairs), unless ``similar_fraction`` asks for a
fixed share. The evaluation uses every unordered pair of held-out images, so it samples nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe_mining.examples.pairs_hdf5 import write_pair_database

__all__ = ["DigitsData", "build_digits_data", "load_digits_images", "sample_pairs", "split_by_sample"]

#: Pixel values of the set are integers 0..16.
DIGITS_MAX_VALUE = 16.0


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797 x 8 x 8, float32 in [0, 1]) and labels (1797, int64) of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / DIGITS_MAX_VALUE).astype(np.float32)
    return images, digits.target.astype(np.int64)


def split_by_sample(labels: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sample indices (train, held_out): within each class a random ``heldout_fraction`` is held out."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1). Got: {heldout_fraction}")
    rng = np.random.default_rng(seed)
    heldout = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        heldout.extend(members[:int(round(heldout_fraction * len(members)))])
    heldout = np.sort(np.asarray(heldout, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), heldout)
    return train, heldout


def sample_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator,
                 similar_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (first, second, sim) of distinct positions into ``labels``; sim = 1 where the labels agree.

    ``similar_fraction`` None: both positions uniform (the natural share of similar pairs, ~1/classes).
    Otherwise exactly round(similar_fraction * n_pairs) similar pairs, the rest dissimilar, in random order.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2 or n_pairs < 1:
        raise ValueError(f"need at least 2 samples and 1 pair. Got: {n} samples, {n_pairs} pairs")
    if similar_fraction is None:
        first = rng.integers(0, n, n_pairs)
        second = (first + rng.integers(1, n, n_pairs)) % n  # any other sample, uniformly
    else:
        if not 0.0 <= similar_fraction <= 1.0:
            raise ValueError(f"similar_fraction must be in [0, 1]. Got: {similar_fraction}")
        n_similar = int(round(similar_fraction * n_pairs))
        first = rng.integers(0, n, n_pairs)
        second = np.empty(n_pairs, dtype=np.int64)
        by_class = {cls: np.flatnonzero(labels == cls) for cls in np.unique(labels)}
        for k in range(n_pairs):
            same = labels == labels[first[k]]
            if k < n_similar:
                candidates = by_class[labels[first[k]]]
                candidates = candidates[candidates != first[k]]
            else:
                candidates = np.flatnonzero(~same)
            if len(candidates) == 0:
                raise ValueError(f"sample {first[k]} has no partner of the requested kind")
            second[k] = rng.choice(candidates)
        order = rng.permutation(n_pairs)
        first, second = first[order], second[order]
    sim = (labels[first] == labels[second]).astype(np.float32)
    return first.astype(np.int64), second.astype(np.int64), sim


@dataclass(frozen=True)
class DigitsData:
    """Where a built digits database lives, and what the evaluation needs."""
    directory: Path
    train_list: Path      # HDF5Data source of the training pairs
    heldout_list: Path    # HDF5Data source of held-out pairs (Caffe's TEST phase)
    heldout_images: np.ndarray   # n x 8 x 8 float32
    heldout_labels: np.ndarray   # n int64
    train_images: np.ndarray
    train_labels: np.ndarray
    meta: dict


def build_digits_data(out_dir: str | os.PathLike, data_seed: int = 0, heldout_fraction: float = 0.3,
                      n_train_pairs: int = 50000, n_heldout_pairs: int = 5000,
                      similar_fraction: float | None = None, log=print) -> DigitsData:
    """Builds (or reuses, when built with the same settings) the train and held-out pair databases."""
    out_dir = Path(out_dir).expanduser().resolve()
    settings = {"data_seed": data_seed, "heldout_fraction": heldout_fraction, "n_train_pairs": n_train_pairs,
                "n_heldout_pairs": n_heldout_pairs, "similar_fraction": similar_fraction}
    meta_path = out_dir / "meta.json"
    images, labels = load_digits_images()
    train_idx, heldout_idx = split_by_sample(labels, heldout_fraction, data_seed)
    reuse = meta_path.exists() and json.loads(meta_path.read_text()).get("settings") == settings
    if reuse:
        meta = json.loads(meta_path.read_text())
        log(f"data: reusing {out_dir}")
    else:
        log(f"data: writing digit pairs to {out_dir}")
        rng = np.random.default_rng(data_seed + 1)
        meta = {"settings": settings, "n_train_samples": len(train_idx), "n_heldout_samples": len(heldout_idx)}
        for name, idx, n_pairs in (("train", train_idx, n_train_pairs), ("heldout", heldout_idx, n_heldout_pairs)):
            first, second, sim = sample_pairs(labels[idx], n_pairs, rng, similar_fraction)
            pair_data = np.stack([images[idx[first]], images[idx[second]]], axis=1)
            write_pair_database(out_dir / f"{name}.txt", pair_data, sim=sim)
            meta[f"n_{name}_pairs"] = n_pairs
            meta[f"{name}_similar_share"] = float(sim.mean())
        np.savez(out_dir / "split.npz", train_idx=train_idx, heldout_idx=heldout_idx)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return DigitsData(directory=out_dir, train_list=out_dir / "train.txt", heldout_list=out_dir / "heldout.txt",
                      heldout_images=images[heldout_idx], heldout_labels=labels[heldout_idx],
                      train_images=images[train_idx], train_labels=labels[train_idx], meta=meta)
