"""The examples' PNG figures (matplotlib, Agg backend: no display needed). Small by design: they are
committed under ``models/<example>/results/``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["pca_2d", "plot_distance_histograms", "plot_loss_curves", "plot_metric_curves", "plot_projections",
           "shrink_png"]

DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(names: list[str]) -> dict[str, str]:
    return {name: f"C{index}" for index, name in enumerate(names)}


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    _pyplot().close(figure)
    shrink_png(path)
    return path


def shrink_png(path: Path) -> None:
    """Rewrites a PNG with a 256-colour palette: a third of the size, no visible change for line plots."""
    from PIL import Image

    with Image.open(path) as image:
        paletted = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    paletted.save(path, optimize=True)


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs at the iterations all of them have."""
    common = sorted(set.intersection(*(set(it for it, _ in curve) for curve in curves)))
    values = np.array([[dict(curve)[it] for it in common] for curve in curves])
    return np.array(common), values.mean(axis=0)


def plot_loss_curves(runs: list[dict], labels: dict[str, str], path: str | os.PathLike,
                     test_output: str | None = None, test_title: str = "", log_scale: bool = True) -> Path:
    """Left: each variant's training loss (as ``caffe train`` displays it; thin: one seed, thick: the mean).
    Right, when ``test_output`` is given: that output of Caffe's TEST phase on the held-out pairs."""
    plt = _pyplot()
    panels = 2 if test_output else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    colours = _colours(list(labels))
    sources = [("train_loss", "training loss (the variant's own loss)")]
    if test_output:
        sources.append((test_output, test_title or f"held-out {test_output}"))
    for axis, (key, title) in zip(axes[0], sources):
        for name, label in labels.items():
            curves = [run["curves"]["train_loss"] if key == "train_loss" else
                      run["curves"]["test_outputs"].get(key, []) for run in runs if run["variant"] == name]
            curves = [curve for curve in curves if curve]
            if not curves:
                continue
            for curve in curves:
                axis.plot(*zip(*curve), color=colours[name], alpha=0.25, linewidth=0.8)
            axis.plot(*_mean_curve(curves), color=colours[name], linewidth=1.8, label=label)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("iteration")
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def plot_metric_curves(runs: list[dict], labels: dict[str, str], metrics: dict[str, str],
                       path: str | os.PathLike, reference: dict[str, tuple[str, float]] | None = None,
                       log_scale: tuple[str, ...] = ()) -> Path:
    """One panel per metric (key -> title): its value on held-out data at every snapshot, per variant (thin:
    one seed, thick: the mean). ``reference``: metric key -> (label, value) drawn as a dashed line; metrics
    named in ``log_scale`` get a logarithmic axis (error rates that fall by orders of magnitude)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    colours = _colours(list(labels))
    for axis, (key, title) in zip(axes[0], metrics.items()):
        for name, label in labels.items():
            curves = [[(snap["iteration"], snap[key]) for snap in run["snapshots"]]
                      for run in runs if run["variant"] == name]
            if not curves:
                continue
            for curve in curves:
                axis.plot(*zip(*curve), color=colours[name], alpha=0.25, linewidth=0.8)
            axis.plot(*_mean_curve(curves), color=colours[name], linewidth=1.8, marker=".", label=label)
        if reference and key in reference:
            axis.axhline(reference[key][1], color="grey", linestyle="--", linewidth=1, label=reference[key][0])
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("iteration")
        if key in log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def pca_2d(embedding: np.ndarray) -> np.ndarray:
    """The first two principal components (n x 2) of the rows, each component's sign fixed so that its
    largest-magnitude loading is positive (the same embedding always gives the same picture)."""
    centred = np.asarray(embedding, dtype=np.float64) - np.mean(embedding, axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)])
    projected = centred @ (components * signs[:, None]).T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def plot_projections(embeddings: dict[str, np.ndarray], classes: np.ndarray, path: str | os.PathLike,
                     title: str = "", markers: np.ndarray | None = None, legend_title: str = "",
                     columns: int | None = None) -> Path:
    """One panel per embedding (label -> n x D): its 2-D PCA projection, points coloured by class (at most 10
    classes: the tab10 colours). ``markers`` (n bools) draws the True points as crosses. Panels are in rows
    of ``columns`` (default: all in one row)."""
    plt = _pyplot()
    classes = np.asarray(classes)
    names = np.unique(classes)
    if len(names) > 10:
        raise ValueError(f"at most 10 classes can be coloured. Got: {len(names)}")
    columns = columns or len(embeddings)
    rows = -(-len(embeddings) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.6 * rows), squeeze=False)
    for unused in axes.ravel()[len(embeddings):]:
        unused.axis("off")
    size = 6 if len(classes) > 200 else 18
    for axis, (label, embedding) in zip(axes.ravel(), embeddings.items()):
        projected = pca_2d(embedding)
        for index, name in enumerate(names):
            member = classes == name
            for crossed in ((False, True) if markers is not None else (False,)):
                chosen = member & (np.asarray(markers, bool) == crossed) if markers is not None else member
                axis.scatter(projected[chosen, 0], projected[chosen, 1], s=size if not crossed else 2 * size,
                             marker="x" if crossed else "o", color=f"C{index}", alpha=0.7,
                             label=str(name) if not crossed else None, linewidths=0.8)
        axis.set_title(label, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][columns - 1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5),
                       title=legend_title or None, title_fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_distance_histograms(distances: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
                             title: str = "") -> Path:
    """One panel per variant (label -> (distance, is_positive)): histograms of matching and non-matching
    pair distances, with the threshold that accepts 95 % of the matching pairs."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(distances), figsize=(3.6 * len(distances), 3.0), squeeze=False)
    for axis, (label, (distance, is_positive)) in zip(axes[0], distances.items()):
        is_positive = np.asarray(is_positive, bool)
        bins = np.linspace(0.0, float(np.max(distance)) * 1.02 + 1e-12, 40)
        axis.hist(distance[is_positive], bins=bins, alpha=0.6, label="matching", color="C2")
        axis.hist(distance[~is_positive], bins=bins, alpha=0.6, label="non-matching", color="C3")
        threshold = np.sort(distance[is_positive])[int(np.ceil(0.95 * is_positive.sum())) - 1]
        axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label="95 % recall")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("distance")
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
