"""`python -m benchmarks build-times`: how long building Caffe with our layers takes.

Three timings, each the wall time of the superbuild's configure + build (the cmake steps scripts/build.sh runs,
without its pip step) of libcaffe, the caffe tool, pycaffe and the layers' gtest binary:
  - from scratch: a copy of the working tree, a new build folder, ccache disabled (CCACHE_DISABLE=1); Caffe's
    source package comes from the download cache (no network time);
  - no change: the same build again (the mirror check and make's up-to-date scan);
  - one layer file edited: a comment line appended to the copy's hardnet_loss_layer.cpp (the mirror copies files
    whose content changed, so a bare `touch` would not rebuild anything), then the build.
The repository itself is never modified. Slow (minutes, both cores): run it once, when the machine is quiet.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_model, load_average

REPO = Path(__file__).resolve().parent.parent
EDITED_FILE = Path("caffe_layers/src/caffe/layers/hardnet_loss_layer.cpp")
COPIED = ["CMakeLists.txt", "caffe_layers", "patches", "proto", "scripts"]


def _cache() -> Path:
    return Path(os.environ.get("CAFFE_MINING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "caffe-mining"))


def _build(source: Path, build: Path, log: Path) -> float:
    env = dict(os.environ, CCACHE_DISABLE="1")
    commands = [
        ["cmake", "-S", str(source), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}",
         f"-DCAFFE_MINING_CACHE_DIR={_cache()}"],
        ["cmake", "--build", str(build), "--parallel", str(os.cpu_count() or 1)],
    ]
    start = time.perf_counter()
    with open(log, "a") as out:
        for command in commands:
            subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main(args) -> int:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="caffe-mining-build-times-"))
    source, build, log = work / "src", work / "build", work / "build.log"
    if build.exists():
        shutil.rmtree(build)
    source.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        target = source / name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, target)
    print(f"building in {work} (log: {log}); load {load_average()}", flush=True)
    scratch = _build(source, build, log)
    print(f"from scratch (ccache off): {scratch:.0f} s", flush=True)
    unchanged = _build(source, build, log)
    print(f"no change: {unchanged:.1f} s", flush=True)
    with open(source / EDITED_FILE, "a") as edited:
        edited.write("// build-times: edited to time a one-file rebuild\n")
    one_file = _build(source, build, log)
    print(f"one layer file edited ({EDITED_FILE.name}): {one_file:.0f} s", flush=True)
    print(f"\n| build (CPU, {os.cpu_count()} cores, {cpu_model()}) | wall time |\n|---|---:|\n"
          f"| from scratch, ccache off | {scratch / 60:.1f} min |\n| no change | {unchanged:.1f} s |\n"
          f"| one layer .cpp edited | {one_file:.0f} s |\n\nload average at the end: {load_average()}")
    return 0
