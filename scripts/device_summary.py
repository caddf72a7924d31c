#!/usr/bin/env python3
"""The summary of a device check (scripts/device_check.sh): each step's status and time, pass/fail counts of the
GPU tests, the memcheck subset and the gtests, both `caffe train -gpu 0` runs (first and last loss), the
`caffe time -gpu 0` table per loss layer and the GPU benchmark table. Markdown on stdout.

  python3 scripts/device_summary.py --logs DIR [--bench DIR]
"""
from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.caffe_time_nets import CONTRASTIVE_LAYERS, HARDNET_LAYERS, parse_caffe_time  # noqa: E402


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def steps(logs: Path) -> list:
    lines = read(logs / "steps.tsv").splitlines()[1:]
    return [line.split("\t") for line in lines if line]


def pytest_counts(xml_path: Path) -> str:
    if not xml_path.exists():
        return "no report"
    suite = ElementTree.parse(xml_path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    passed = total - failures - errors - skipped
    return f"{passed} passed, {failures} failed, {errors} errors, {skipped} skipped (of {total})"


def pytest_line(log: str) -> str:
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|error).*?) in [0-9.]+s", log, re.M)
    return found[-1] if found else "no pytest summary line"


def gtest_counts(log: str) -> str:
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", log)
    failed = re.search(r"\[  FAILED  \] (\d+) tests?, listed below", log)
    ran = re.search(r"\[==========\] (\d+) tests? from (\d+) test (?:suites?|cases?) ran", log)
    if not ran:
        return "did not finish"
    names = re.findall(r"^\[  FAILED  \] ([A-Za-z_][^\s,]*)", log, re.M)
    gpu = len(set(re.findall(r"^\[       OK \] \S*GPU\S*", log, re.M)))
    text = f"{passed.group(1) if passed else 0} passed ({gpu} of them GPU), {failed.group(1) if failed else 0} failed"
    return text + (f": {', '.join(sorted(set(names)))}" if names else "")


def train_result(log: str) -> str:
    losses = [float(v) for v in re.findall(r"Iteration \d+.*?, loss = ([0-9.eE+-]+)", log)]
    done = "Optimization Done." in log
    gpu = "Use GPU with device ID 0" in log or "Using GPUs 0" in log
    if not losses:
        return f"no loss lines; finished: {done}"
    verdict = "loss went down" if losses[-1] < losses[0] else "loss did NOT go down"
    return (f"{'finished' if done else 'did not finish'} on the GPU: {gpu}; loss {losses[0]:.4g} -> "
            f"{losses[-1]:.4g} ({verdict})")


def caffe_time_table(log: str) -> list:
    rows = ["| net | layer | forward | backward |", "| --- | --- | ---: | ---: |"]
    for block in re.split(r"^### ", log, flags=re.M)[1:]:
        net = block.splitlines()[0].strip()
        times = parse_caffe_time(block)
        for layer in [*HARDNET_LAYERS, *CONTRASTIVE_LAYERS]:
            if layer in times:
                forward, backward = times[layer]
                rows.append(f"| {net} | {layer} | {forward:.3f} ms | {backward:.3f} ms |")
    return rows if len(rows) > 2 else ["(no caffe time output)"]


def summary(logs: Path, bench: Path | None) -> str:
    out = ["# Device check", ""]
    env = read(logs / "environment.log").splitlines()
    out += ["Machine: " + "; ".join(env[:2]), "", "| step | status | seconds |", "| --- | --- | ---: |"]
    out += [f"| {name} | {'pass' if status == '0' else status} | {seconds} |" for name, status, seconds in
            steps(logs)]
    out += ["", f"- GPU tests (pytest tests/gpu): {pytest_counts(logs / 'gpu_tests.xml')}",
            f"- memcheck subset (compute-sanitizer): {pytest_line(read(logs / 'memcheck.log'))}; "
            f"{(re.findall(r'ERROR SUMMARY: .*', read(logs / 'memcheck.log')) or ['no ERROR SUMMARY line'])[-1]}",
            f"- gtests (test.testbin, GPU device 0): {gtest_counts(read(logs / 'gtests.log'))}",
            f"- caffe train -gpu 0 siamese_minimal: {train_result(read(logs / 'train_siamese_minimal.log'))}",
            f"- caffe train -gpu 0 hardnet_minimal: {train_result(read(logs / 'train_hardnet_minimal.log'))}",
            "", "## caffe time -gpu 0 (10 iterations, per layer)", ""]
    out += caffe_time_table(read(logs / "caffe_time.log"))
    out += ["", "## GPU benchmark", ""]
    table = read(bench / "results_gpu.md") if bench else ""
    out.append(table or "(no benchmark results)")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--bench", type=Path)
    args = parser.parse_args(argv)
    print(summary(args.logs, args.bench), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
