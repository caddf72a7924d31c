"""Pair databases in the layout Caffe's ``HDF5Data`` layer reads.

A database is a text file listing HDF5 files (absolute paths, one a line: the layer's ``source``); each HDF5
file holds the same datasets, row i of each belonging to pair i. The datasets are the layer's tops, by name:

- ``pair_data``: N x 2 x H x W, float32 or uint8 (Caffe converts it to float when it loads it): channel 0 is
  the first image of the pair, channel 1 the second (as in Caffe's MNIST siamese example, a ``Slice`` layer
  splits them);
- ``sim`` (optional): N, float32, 1 for a matching pair and 0 otherwise (ContrastiveLoss's third bottom);
- ``label`` (optional): N, float32, an id of what the pair shows (HardNetLoss's label-aware masking).

``HDF5Data`` loads one whole file into memory, so large databases are split into files of ``rows_per_file``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["read_pair_database", "write_pair_database"]


def write_pair_database(list_path: str | os.PathLike, pair_data: np.ndarray, sim: np.ndarray | None = None,
                        label: np.ndarray | None = None, rows_per_file: int = 20000) -> list[Path]:
    """Writes ``<stem>_<k>.h5`` files next to ``list_path`` and the list file itself; returns the HDF5 paths."""
    import h5py

    pair_data = np.asarray(pair_data)
    if pair_data.dtype != np.uint8:  # HDF5Data converts integers to float itself; uint8 keeps patches small
        pair_data = pair_data.astype(np.float32)
    if pair_data.ndim != 4 or pair_data.shape[1] != 2:
        raise ValueError(f"pair_data must be N x 2 x H x W. Got: {pair_data.shape}")
    n_pairs = len(pair_data)
    columns = {"pair_data": pair_data}
    for name, values in (("sim", sim), ("label", label)):
        if values is not None:
            values = np.asarray(values, dtype=np.float32).ravel()
            if len(values) != n_pairs:
                raise ValueError(f"{name} must have one value per pair ({n_pairs}). Got: {len(values)}")
            columns[name] = values
    if n_pairs == 0 or rows_per_file < 1:
        raise ValueError(f"need at least one pair and rows_per_file >= 1. Got: {n_pairs}, {rows_per_file}")
    list_path = Path(list_path).resolve()
    list_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in list_path.parent.glob(f"{list_path.stem}_*.h5"):  # parts of an earlier, larger database
        if stale.stem[len(list_path.stem) + 1:].isdigit():
            stale.unlink()
    h5_paths = []
    for part, start in enumerate(range(0, n_pairs, rows_per_file)):
        h5_path = list_path.with_name(f"{list_path.stem}_{part}.h5")
        with h5py.File(h5_path, "w") as h5:
            for name, values in columns.items():
                h5.create_dataset(name, data=values[start:start + rows_per_file])
        h5_paths.append(h5_path)
    list_path.write_text("".join(f"{path}\n" for path in h5_paths))
    return h5_paths


def read_pair_database(list_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All datasets of a database, the files concatenated in list order."""
    import h5py

    paths = [line.strip() for line in Path(list_path).read_text().splitlines() if line.strip()]
    if not paths:
        raise ValueError(f"{list_path} lists no HDF5 file")
    parts: dict[str, list[np.ndarray]] = {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            for name in h5:
                parts.setdefault(name, []).append(h5[name][()])
    return {name: np.concatenate(values) for name, values in parts.items()}
