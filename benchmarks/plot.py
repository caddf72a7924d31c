"""PNG of time per forward + backward pass against N, log-log, one panel per loss."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def _series(rows: List[dict]) -> Dict[str, list]:
    series = defaultdict(list)
    for row in rows:
        series[row["impl"]].append((row["n"], row["median_s"]))
    return series


_FAMILY_COLORS = (("MiningContrastiveLoss layer", "tab:blue"), ("core (C++, nth", "tab:orange"),
                  ("sorted multimaps", "tab:green"))
_RATIO_MARKERS = {"r=1": "o", "r=2": "s", "r=4": "^"}


def _style(name: str) -> dict:
    """Floors black and dashed; in the contrastive panel one colour per implementation, one marker per ratio."""
    if "SGEMM" in name or "ContrastiveLoss layer (pycaffe, no mining)" in name:
        return {"color": "black", "linestyle": "--", "linewidth": 2, "marker": "o"}
    for prefix, color in _FAMILY_COLORS:
        if name.startswith(prefix):
            marker = next((m for r, m in _RATIO_MARKERS.items() if r in name), "o")
            return {"color": color, "marker": marker, "linestyle": ":" if "multimap" in name else "-"}
    return {"marker": "o"}


def write(results: dict, path: Path) -> bool:
    """Writes the plot; False (and no file) when the run has neither the HardNet nor the contrastive suite."""
    panels = [(key, title) for key, title in (("hardnet", "HardNetLoss fwd+bwd"),
                                              ("contrastive", "MiningContrastiveLoss fwd+bwd"))
              if results.get(key)]
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for name, points in _series(results[key]).items():
            points.sort()
            ax.plot([n for n, _ in points], [t for _, t in points], label=name, **_style(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (pairs)")
        ax.set_ylabel("seconds per forward + backward")
        ax.set_title(f"{title}, D = {results['settings']['dim']}, float32, "
                     f"{results['settings']['threads']} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
