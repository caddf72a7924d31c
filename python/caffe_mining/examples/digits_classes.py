"""scikit-learn's 8x8 digits split by class, for zero-shot retrieval as "Sampling Matters" evaluates it: the
net trains on some digits (default 0-6) and is measured on digits it has never seen (7-9).

Pixels are standardised (per pixel: minus the mean, divided by the standard deviation, both of the training
classes only; the pixels that never vary there are divided by 1). The training database holds as many
whole epochs of P x K batches as ``min_train_batches`` needs, in file order (:mod:`.pk_batches`), for an
``HDF5Data`` layer without ``shuffle``; a held-out database of P x K batches of the held-out classes, one
epoch, feeds Caffe's TEST phase. Each is
an HDF5 list file (``HDF5Data``'s source) over files with ``data`` (n x 1 x 8 x 8 float32) and ``label``
(n float32, the digit), every file a whole number of batches so that batches never straddle a file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe_mining.examples.digits import load_digits_images
from caffe_mining.examples.pk_batches import pk_batch_order

__all__ = ["ClassSplitDigits", "build_class_split_digits", "read_database", "standardise", "write_database"]

TRAIN_CLASSES = tuple(range(7))
HELDOUT_CLASSES = (7, 8, 9)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and each of ``others`` standardised per feature with the mean and standard deviation of
    ``train`` (rows are samples; a feature with zero spread is only centred)."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std[std == 0] = 1.0
    return [((a.reshape(len(a), -1) - mean) / std).reshape(a.shape).astype(np.float32) for a in (train, *others)]


def write_database(list_path: str | os.PathLike, data: np.ndarray, label: np.ndarray,
                   rows_per_file: int) -> list[Path]:
    """``<stem>_<k>.h5`` files (``data``, ``label``) next to ``list_path``, and the list file itself."""
    import h5py

    if len(data) != len(label) or len(data) == 0 or rows_per_file < 1:
        raise ValueError(f"need as many labels as rows, at least one row and rows_per_file >= 1. Got: "
                         f"{len(data)} rows, {len(label)} labels, rows_per_file {rows_per_file}")
    list_path = Path(list_path).resolve()
    list_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in list_path.parent.glob(f"{list_path.stem}_*.h5"):  # parts of an earlier, larger database
        if stale.stem[len(list_path.stem) + 1:].isdigit():
            stale.unlink()
    paths = []
    for part, start in enumerate(range(0, len(data), rows_per_file)):
        path = list_path.with_name(f"{list_path.stem}_{part}.h5")
        with h5py.File(path, "w") as h5:
            h5.create_dataset("data", data=np.asarray(data[start:start + rows_per_file], np.float32))
            h5.create_dataset("label", data=np.asarray(label[start:start + rows_per_file], np.float32))
        paths.append(path)
    list_path.write_text("".join(f"{path}\n" for path in paths))
    return paths


def read_database(list_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(data, label) of a database, its files concatenated in list order (the order ``HDF5Data`` reads)."""
    import h5py

    data, label = [], []
    for line in Path(list_path).read_text().split():
        with h5py.File(line, "r") as h5:
            data.append(h5["data"][()])
            label.append(h5["label"][()])
    return np.concatenate(data), np.concatenate(label)


@dataclass(frozen=True)
class ClassSplitDigits:
    """A built database, and the arrays the evaluation needs (standardised images, n x 8 x 8)."""
    directory: Path
    train_list: Path
    heldout_list: Path
    batch_size: int            # P x K of the training batches
    heldout_batch_size: int    # P x K of the held-out batches (TEST phase)
    heldout_batches: int       # batches in the held-out database: the solver's test_iter
    train_images: np.ndarray
    train_labels: np.ndarray
    heldout_images: np.ndarray
    heldout_labels: np.ndarray
    meta: dict


def build_class_split_digits(out_dir: str | os.PathLike, min_train_batches: int, classes_per_batch: int = 7,
                             samples_per_class: int = 8, heldout_classes_per_batch: int = 3,
                             train_classes=TRAIN_CLASSES, heldout_classes=HELDOUT_CLASSES, data_seed: int = 0,
                             batches_per_file: int = 500, log=print) -> ClassSplitDigits:
    """Builds (or reuses, when built with the same settings) the training and held-out databases."""
    train_classes, heldout_classes = tuple(map(int, train_classes)), tuple(map(int, heldout_classes))
    if set(train_classes) & set(heldout_classes):
        raise ValueError(f"training and held-out classes overlap. Got: {train_classes} and {heldout_classes}")
    out_dir = Path(out_dir).expanduser().resolve()
    settings = {"min_train_batches": min_train_batches, "classes_per_batch": classes_per_batch,
                "samples_per_class": samples_per_class, "heldout_classes_per_batch": heldout_classes_per_batch,
                "train_classes": list(train_classes), "heldout_classes": list(heldout_classes),
                "data_seed": data_seed, "batches_per_file": batches_per_file}
    images, labels = load_digits_images()
    is_train, is_heldout = np.isin(labels, train_classes), np.isin(labels, heldout_classes)
    train_images, heldout_images = standardise(images[is_train], images[is_heldout])
    train_labels, heldout_labels = labels[is_train], labels[is_heldout]
    batch = classes_per_batch * samples_per_class
    heldout_batch = heldout_classes_per_batch * samples_per_class
    meta_path = out_dir / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("settings") == settings:
        meta = json.loads(meta_path.read_text())
        log(f"data: reusing {out_dir}")
    else:
        log(f"data: writing P x K digit batches to {out_dir}")
        rng = np.random.default_rng(data_seed)
        epochs = []
        while sum(map(len, epochs)) < min_train_batches * batch:  # whole epochs, so that no batch repeats
            epochs.append(pk_batch_order(train_labels, classes_per_batch, samples_per_class, 1, rng))
        train_order = np.concatenate(epochs)
        heldout_order = pk_batch_order(heldout_labels, heldout_classes_per_batch, samples_per_class, 1, rng)
        write_database(out_dir / "train.txt", train_images[train_order][:, None], train_labels[train_order],
                       batches_per_file * batch)
        write_database(out_dir / "heldout.txt", heldout_images[heldout_order][:, None],
                       heldout_labels[heldout_order], batches_per_file * heldout_batch)
        meta = {"settings": settings, "n_train_samples": int(is_train.sum()),
                "n_heldout_samples": int(is_heldout.sum()), "train_batches": len(train_order) // batch,
                "train_epochs": len(epochs),
                "heldout_batches": len(heldout_order) // heldout_batch}
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return ClassSplitDigits(directory=out_dir, train_list=out_dir / "train.txt",
                            heldout_list=out_dir / "heldout.txt", batch_size=batch, heldout_batch_size=heldout_batch,
                            heldout_batches=meta["heldout_batches"], train_images=train_images,
                            train_labels=train_labels, heldout_images=heldout_images,
                            heldout_labels=heldout_labels, meta=meta)
