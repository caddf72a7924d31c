"""Markdown tables of a benchmark run, the verdict against the project's targets, and the README's results section."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from benchmarks import runners
from benchmarks.timing import format_bytes, format_seconds

# The project's targets (issue 7).
HARDNET_VS_FLOOR_MAX = 1.3
HARDNET_VS_TORCH_MIN = 3.0  # times faster, at N = HARDNET_TORCH_TARGET_N
HARDNET_TORCH_TARGET_N = 1024
CONTRASTIVE_VS_CAFFE_MAX = 1.5

README_BEGIN = "<!-- benchmark-results:begin -->"
README_END = "<!-- benchmark-results:end -->"


def _ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _loss(row: dict) -> str:
    if row["loss"] is None:
        return "—"
    return f"{row['loss']:.6g}" + ("" if row["agrees"] else " **disagrees**")


def hardnet_table(rows: List[dict]) -> str:
    lines = ["| N | implementation | median | IQR | × SGEMM | × PyTorch | loss |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['n']} | {row['impl']} | {format_seconds(row['median_s'])} | {row['spread']:.0%} "
                     f"| {_ratio(row['vs_floor'])} | {_ratio(row['vs_torch'])} | {_loss(row)} |")
    return "\n".join(lines)


def contrastive_table(rows: List[dict]) -> str:
    lines = ["| N | implementation | median | IQR | × ContrastiveLoss | × multimaps (same r) | loss |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['n']} | {row['impl']} | {format_seconds(row['median_s'])} | {row['spread']:.0%} "
                     f"| {_ratio(row['vs_caffe'])} | {_ratio(row['vs_multimap'])} | {_loss(row)} |")
    return "\n".join(lines)


def memory_table(rows: List[dict]) -> str:
    lines = ["| loss | N | implementation | peak extra | (peak RSS growth − own inputs/outputs) |",
             "|---|---:|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['loss']} | {row['n']} | {row['impl']} | {format_bytes(row['extra_bytes'])} "
                     f"| {format_bytes(row['peak_delta_bytes'])} − {format_bytes(row['io_bytes'])} |")
    return "\n".join(lines)


def verdicts(hardnet_rows: List[dict], contrastive_rows: List[dict]) -> List[str]:
    """One line per target and implementation: measured ratio(s) and whether the target is met."""
    lines = []
    for impl in (runners.HARDNET_CAFFE, "core (C++, buffers reused)"):
        mine = [r for r in hardnet_rows if r["impl"] == impl]
        if not mine:
            continue
        worst = max(mine, key=lambda r: r["vs_floor"])
        per_n = ", ".join(f"N={r['n']}: {r['vs_floor']:.2f}×" for r in mine)
        met = worst["vs_floor"] <= HARDNET_VS_FLOOR_MAX
        lines.append(f"- HardNetLoss ≤ {HARDNET_VS_FLOOR_MAX}× one SGEMM, {impl}: {per_n} — "
                     f"{'met' if met else 'MISSED'}")
        at_target = [r for r in mine if r["n"] == HARDNET_TORCH_TARGET_N and r["vs_torch"] is not None]
        for r in at_target:
            speedup = 1.0 / r["vs_torch"]
            lines.append(f"- HardNetLoss ≥ {HARDNET_VS_TORCH_MIN:g}× faster than PyTorch at N = "
                         f"{HARDNET_TORCH_TARGET_N}, {impl}: {speedup:.2f}× faster — "
                         f"{'met' if speedup >= HARDNET_VS_TORCH_MIN else 'MISSED'}")
    layer_rows = [r for r in contrastive_rows if r["impl"].startswith("MiningContrastiveLoss layer")]
    for ratio in sorted({r["mining_ratio"] for r in layer_rows}):
        mine = [r for r in layer_rows if r["mining_ratio"] == ratio]
        per_n = ", ".join(f"N={r['n']}: {r['vs_caffe']:.2f}×" for r in mine)
        met = all(r["vs_caffe"] <= CONTRASTIVE_VS_CAFFE_MAX for r in mine)
        lines.append(f"- MiningContrastiveLoss ≤ {CONTRASTIVE_VS_CAFFE_MAX}× Caffe's ContrastiveLoss, "
                     f"mining_ratio {ratio}: {per_n} — {'met' if met else 'MISSED'}")
    if not any(r["agrees"] is False for r in hardnet_rows + contrastive_rows):
        lines.append("- every implementation's loss agrees with the NumPy reference (rel. 1e-4)")
    else:
        lines.append("- **some implementation's loss disagrees with the NumPy reference** (see the tables)")
    return lines


def markdown(results: dict, plot_name: Optional[str]) -> str:
    machine = results["machine"]
    settings = results["settings"]
    parts = [
        f"Measured {results['date']} on {machine['cpu']} ({machine['cores']} cores), {machine['system']}, "
        f"{settings['threads']} BLAS/torch thread(s), {settings['clock']} clock; load average at start "
        f"{machine['load_at_start']}, at end {results['load_at_end']}. {settings['rounds']} timed rounds after "
        f"{settings['warmup']} warm-up round(s), implementations interleaved; ratios are medians of per-round ratios. "
        f"OpenBLAS of the core: `{machine['openblas_of_the_core']}`; torch {machine['torch'] or 'not installed'}.",
        "",
        "Targets:",
        *verdicts(results["hardnet"], results["contrastive"]),
    ]
    if plot_name:
        parts += ["", f"![time against N]({plot_name})"]
    if results["hardnet"]:
        parts += ["", f"HardNetLoss forward + backward, D = {settings['dim']}, float32:", "",
                  hardnet_table(results["hardnet"])]
    if results["contrastive"]:
        parts += ["", f"MiningContrastiveLoss forward + backward, D = {settings['dim']}, float32:", "",
                  contrastive_table(results["contrastive"])]
    if results.get("memory"):
        parts += ["", "Peak extra memory (one forward + backward in a fresh process; see memory.py):", "",
                  memory_table(results["memory"])]
    return "\n".join(parts) + "\n"


def update_readme(readme: Path, section: str) -> None:
    """Replaces the text between the README's result markers with `section`."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme} lacks the markers {README_BEGIN} ... {README_END}")
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{section}{README_END}", text))
