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
# Issue 14: every mining configuration against one SGEMM of the tuned kernel, at N >= CONFIG_TARGET_MIN_N.
CONFIG_VS_FLOOR_MAX = {"MIN": 1.3, "RANDOM": 1.3, "AVERAGE": 3.3}
CONFIG_TARGET_MIN_N = 512

README_BEGIN = "<!-- benchmark-results:begin -->"
README_END = "<!-- benchmark-results:end -->"
README_CONFIGS = ("<!-- benchmark-configs:begin -->", "<!-- benchmark-configs:end -->")


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


def config_target(config: str) -> float:
    return CONFIG_VS_FLOOR_MAX[config.split(" ")[0]]


def configs_table(rows: List[dict]) -> str:
    """One line per (N, configuration): the SGEMM floor of those rounds, the core and the layer against it."""
    lines = ["| N | configuration | SGEMM (floor) | core (C++, buffers reused) | × SGEMM "
             "| HardNetLoss layer (pycaffe) | × SGEMM | target | loss |",
             "|---:|---|---:|---:|---:|---:|---:|---|---:|"]
    for n in sorted({row["n"] for row in rows}):
        at_n = [row for row in rows if row["n"] == n]
        floor = next(row for row in at_n if row["path"] == "floor")
        for config in dict.fromkeys(row["config"] for row in at_n if row["config"] is not None):
            paths = {row["path"]: row for row in at_n if row["config"] == config}
            core, layer = paths.get("core"), paths.get("layer")
            cells = []
            for row in (core, layer):
                cells += ["—", "—"] if row is None else [format_seconds(row["median_s"]), _ratio(row["vs_floor"])]
            target = config_target(config)
            worst = max(row["vs_floor"] for row in paths.values())
            verdict = (f"≤ {target}×: {'met' if worst <= target else '**MISSED**'}" if n >= CONFIG_TARGET_MIN_N
                       else "—")
            lines.append(f"| {n} | {config} | {format_seconds(floor['median_s'])} | {' | '.join(cells)} | {verdict} "
                         f"| {_loss(core or layer)} |")
    return "\n".join(lines)


def config_verdicts(rows: List[dict]) -> List[str]:
    """One line per configuration: its ratios at N >= CONFIG_TARGET_MIN_N, core and layer, and the verdict (a line
    saying so when the run has no such N)."""
    lines = []
    for config in dict.fromkeys(row["config"] for row in rows if row["config"] is not None):
        mine = [row for row in rows if row["config"] == config and row["n"] >= CONFIG_TARGET_MIN_N]
        if not mine:
            continue
        target = config_target(config)
        per_path = "; ".join(
            f"{path} " + ", ".join(f"N={row['n']}: {row['vs_floor']:.2f}×" for row in mine if row["path"] == path)
            for path in ("core", "layer") if any(row["path"] == path for row in mine))
        met = all(row["vs_floor"] <= target for row in mine)
        lines.append(f"- {config} ≤ {target}× one SGEMM: {per_path} — {'met' if met else 'MISSED'}")
    return lines or [f"- none: no N ≥ {CONFIG_TARGET_MIN_N} in this run"]


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


def openblas_line(machine: dict) -> str:
    """The kernel the SGEMM floor and the core ran with, and where OPENBLAS_CORETYPE came from."""
    coretype = machine.get("openblas_coretype") or {}
    value = coretype.get("value")
    return (f"OpenBLAS kernel **{machine.get('openblas_kernel', '?')}** "
            f"(`{machine['openblas_of_the_core']}`); OPENBLAS_CORETYPE"
            f"{'=' + value if value else ' unset'}: {coretype.get('source', '?')}. HardNet's row scan: "
            f"{machine.get('hardnet_cpu_lanes', '?')} float lanes.")


def header(results: dict) -> str:
    machine = results["machine"]
    settings = results["settings"]
    return (f"Measured {results['date']} on {machine['cpu']} ({machine['cores']} cores), {machine['system']}, "
            f"{settings['threads']} BLAS/torch thread(s), {settings['clock']} clock; load average at start "
            f"{machine['load_at_start']}, at end {results['load_at_end']}. {settings['rounds']} timed rounds after "
            f"{settings['warmup']} warm-up round(s), implementations interleaved; ratios are medians of per-round "
            f"ratios. {openblas_line(machine)} torch {machine['torch'] or 'not installed'}.")


def configs_markdown(results: dict) -> str:
    """The per-configuration section: header, verdicts, table."""
    rows = results["hardnet_configs"]
    return "\n".join([
        header(results), "",
        f"Targets at N ≥ {CONFIG_TARGET_MIN_N} (one SGEMM N×N×D of the kernel named above):",
        *config_verdicts(rows),
        *([] if all(row["agrees"] is not False for row in rows) else
          ["- **some configuration's loss disagrees with the NumPy reference** (see the table)"]),
        "",
        f"HardNetLoss forward + backward per configuration, D = {results['settings']['dim']}, float32, "
        f"TRIPLET_MARGIN, margin 1 (RANDOM: seed {runners.RANDOM_SEED}; every loss checked against the NumPy "
        f"reference with the same options and uniforms):", "",
        configs_table(rows)]) + "\n"


def markdown(results: dict, plot_name: Optional[str], with_configs: bool = True) -> str:
    settings = results["settings"]
    parts = [
        header(results),
        "",
        "Targets:",
        *verdicts(results["hardnet"] + (results.get("hardnet_configs", []) if with_configs else []),
                  results["contrastive"]),
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
    if with_configs and results.get("hardnet_configs"):
        parts += ["", "Every mining configuration against one SGEMM:", "",
                  "Targets at N ≥ {}:".format(CONFIG_TARGET_MIN_N), *config_verdicts(results["hardnet_configs"]), "",
                  configs_table(results["hardnet_configs"])]
    return "\n".join(parts) + "\n"


def update_readme(readme: Path, section: str, begin: str = README_BEGIN, end: str = README_END) -> None:
    """Replaces the text between the README's markers `begin` and `end` with `section`."""
    text = readme.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme} lacks the markers {begin} ... {end}")
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{section}{end}", text))
