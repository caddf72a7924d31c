"""`python -m benchmarks run`: both suites, the memory probes, then the table, JSON and plot of this one run."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks import machine, memory, plot, report, runners, suites, triplet_suite

README = Path(__file__).resolve().parent / "README.md"
PLOT_NAME = "time_vs_n.png"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args) -> int:
    ctx = runners.Context.load(args.threads, with_torch=not args.no_torch)
    if ctx.caffe is None:
        _log("pycaffe not importable (PYTHONPATH=<build>/caffe-src/python): the Caffe layers are left out")
    if ctx.torch is None and not args.no_torch:
        _log("torch not installed (python -m benchmarks setup-torch): the PyTorch formulation is left out")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine.describe(args.threads, ctx.lib, ctx.caffe, ctx.torch,
                                    getattr(args, "openblas_coretype", None)),
        "settings": {"dim": args.dim, "rounds": args.rounds, "warmup": args.warmup, "threads": args.threads,
                     "clock": args.clock, "min_sample_s": args.min_sample, "smoke": args.smoke},
        "hardnet": [], "hardnet_configs": [], "contrastive": [], "triplet": [], "memory": [],
    }
    _log(report.openblas_line(results["machine"]))
    hardnet_sizes = args.hardnet_sizes if args.suite in ("hardnet", "all") else []
    config_sizes = getattr(args, "config_sizes", []) if args.suite in ("hardnet-configs", "all") else []
    triplet_sizes = getattr(args, "triplet_sizes", []) if args.suite in ("triplet", "all") else []
    contrastive_sizes = args.contrastive_sizes if args.suite in ("contrastive", "all") else []
    timing = suites.TimingSettings(args.rounds, args.warmup, args.min_sample, args.clock)
    if hardnet_sizes:
        results["hardnet"] = suites.run_hardnet(ctx, hardnet_sizes, args.dim, timing, _log)
    if config_sizes:
        results["hardnet_configs"] = suites.run_hardnet_configs(ctx, config_sizes, args.dim, timing, _log)
    if triplet_sizes:
        results["triplet"] = triplet_suite.run(ctx, triplet_sizes, args.dim, timing, _log)
    if contrastive_sizes:
        results["contrastive"] = suites.run_contrastive(ctx, contrastive_sizes, args.dim, args.ratios, timing, _log)
    if args.suite == "margin":
        return _run_margin(args, ctx, results, timing)
    if not args.no_memory:
        results["memory"] = memory.run_memory(ctx, hardnet_sizes, contrastive_sizes, args.ratios, args.dim,
                                              args.threads, _log)
    results["load_at_end"] = machine.load_average()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plotted = plot.write(results, out / PLOT_NAME)
    section = report.markdown(results, PLOT_NAME if plotted else None)
    # The per-configuration suite alone keeps files of its own, next to those of the whole run.
    stem = {"hardnet-configs": "results_configs", "triplet": "results_triplet"}.get(args.suite, "results")
    if args.suite == "triplet":
        section = triplet_suite.markdown(results)
    elif results["triplet"]:
        section += "\n" + triplet_suite.markdown(results)
    (out / f"{stem}.md").write_text(section)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    print(section)
    if args.update_readme:
        if results["hardnet"] or results["contrastive"]:
            plot_path = f"{out.resolve().relative_to(README.parent)}/{PLOT_NAME}" if plotted else None
            report.update_readme(README, report.markdown(results, plot_path, with_configs=False))
        if results["hardnet_configs"]:
            report.update_readme(README, report.configs_markdown(results), *report.README_CONFIGS)
        if results["triplet"]:
            report.update_readme(README, triplet_suite.markdown(results), *triplet_suite.README_MARKERS)
    disagreeing = [r["impl"] for r in results["hardnet"] + results["hardnet_configs"] + results["contrastive"] + results["triplet"]
                   if r["agrees"] is False]
    if disagreeing:
        _log(f"losses disagree with the reference: {disagreeing}")
        return 1
    return 0


def _run_margin(args, ctx, results, timing) -> int:
    """The MarginLoss suite alone (benchmarks/margin_suite.py): results_margin.md/.json, its README section."""
    from benchmarks import margin_suite

    results["margin"] = margin_suite.run_margin(ctx, args.margin_sizes, args.dim, timing, _log)
    results["load_at_end"] = machine.load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = margin_suite.markdown(results, report.header(results))
    (out / "results_margin.md").write_text(section)
    (out / "results_margin.json").write_text(json.dumps(results, indent=1))
    print(section)
    if args.update_readme:
        report.update_readme(README, section, *margin_suite.README_MARGIN)
    disagreeing = [r["impl"] for r in results["margin"] if r["agrees"] is False]
    if disagreeing:
        _log(f"losses disagree with their checks: {disagreeing}")
        return 1
    return 0
