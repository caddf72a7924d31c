"""Applies each mutant to a scratch copy of the repository (never the working tree), rebuilds the Caffe-free bindings
there (`setup.py build_ext --inplace --force` through ccache, so only the translation units the mutated file reaches
recompile), runs the core's Caffe-free tests with `pytest -x` and the copy's python/ alone on PYTHONPATH, and
judges: killed (with the first failing test), survived, equivalent (survived and listed so, with the reason) or
error (a stale anchor, a mutant that does not compile, an "equivalent" one that a test kills)."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .mutants import DESELECTED, TEST_FILES, Mutant

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    mutant: Mutant
    status: str      # killed, SURVIVED, equivalent, ERROR
    detail: str      # the first failing test, or what went wrong
    build_s: float
    test_s: float
    cpu_s: float = 0.0  # CPU time of the builds and tests (wall time depends on what else the machine runs)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stale_anchors(mutants: Sequence[Mutant], root: Path = REPO) -> List[str]:
    """One message per mutant whose anchor does not occur exactly once in its file under `root`."""
    messages = []
    for m in mutants:
        path = root / m.file
        count = path.read_text().count(m.anchor) if path.is_file() else -1
        if count != 1:
            where = "file missing" if count < 0 else f"anchor found {count} times"
            messages.append(f"{m.id}: {where} in {m.file}: {m.anchor!r}")
    return messages


def copy_repository(dest: Path, root: Path = REPO) -> None:
    """The files git tracks or would track (no build outputs), or everything but them without git."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True)
    if listed.returncode == 0:
        for name in listed.stdout.decode().split("\0"):
            if name and (root / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, dest / name)
    else:
        shutil.copytree(root, dest, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "build", "*.so", "__pycache__", ".hypothesis"))


def last_lines(text: str, count: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


class Scratch:
    """A copy of the repository with its own bindings, built and tested in place."""

    def __init__(self, path: Path, python: str, timeout_s: float):
        self.path, self.python, self.timeout_s = path, python, timeout_s
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAFFE_MINING_REQUIRE_CAFFE")}
        self.env["PYTHONPATH"] = str(path / "python")  # this copy's package alone: never an installed one
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.build_env = dict(self.env)  # the tests keep CC/CXX as given (some compile with $CXX themselves)
        # Only the CPU extension: no test of TEST_FILES runs the CUDA one (its logic is checked by emulation), and
        # nvcc, which ccache does not wrap here, would recompile it for every mutant (minutes under load).
        self.build_env["CAFFE_MINING_CUDA"] = "0"
        ccache = shutil.which("ccache")
        if ccache:  # unchanged translation units come from the cache: a mutant recompiles what it reaches
            for var in ("CC", "CXX"):
                compiler = os.environ.get(var) or sysconfig.get_config_var(var) or ("cc" if var == "CC" else "c++")
                self.build_env[var] = f"{ccache} {compiler}"
            self.build_env.setdefault("CCACHE_DIR", str(path / ".ccache"))
        self.uses_ccache = bool(ccache)

    def build(self) -> Tuple[bool, str]:
        done = subprocess.run([self.python, "setup.py", "build_ext", "--inplace", "--force"], cwd=self.path,
                              env=self.build_env, capture_output=True, text=True)
        return done.returncode == 0, done.stdout + done.stderr

    def imports_its_own_core(self) -> str:
        done = subprocess.run([self.python, "-c", "import caffe_mining._core as c; print(c.__file__)"],
                              cwd=self.path, env=self.env, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else done.stderr

    def test(self, files: Sequence[str]) -> Tuple[bool, str, str]:
        """(passed, first failing test, output) of pytest -x over `files`."""
        command = [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files]
        for node in DESELECTED:
            if node.split("::")[0] in files:
                command += ["--deselect", node]
        try:
            done = subprocess.run(command, cwd=self.path, env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            return False, f"timeout after {self.timeout_s:.0f} s (a mutant that hangs is caught)", ""
        output = done.stdout + done.stderr
        if done.returncode == 0:
            return True, "", output
        for line in output.splitlines():
            if line.startswith(("FAILED ", "ERROR ")):
                return False, line.split(" - ")[0].split(" ", 1)[1], output
        return False, f"pytest exit {done.returncode}: {last_lines(output, 3)}", output


def run_mutant(scratch: Scratch, mutant: Mutant, pristine: str) -> Outcome:
    path = scratch.path / mutant.file
    if pristine.count(mutant.anchor) != 1:
        return Outcome(mutant, "ERROR", f"anchor found {pristine.count(mutant.anchor)} times in {mutant.file}", 0, 0)
    path.write_text(pristine.replace(mutant.anchor, mutant.replacement))
    cpu_start = children_cpu_s()
    try:
        start = time.monotonic()
        built, log = scratch.build()
        build_s = time.monotonic() - start
        if not built:
            return Outcome(mutant, "ERROR", "does not compile:\n" + last_lines(log), build_s, 0)
        start = time.monotonic()
        first = [f for f in mutant.kill_first if f in TEST_FILES]
        rest = [f for f in TEST_FILES if f not in first]
        passed, failure = True, ""
        for files in (first, rest):
            if files and passed:
                passed, failure, _ = scratch.test(files)
        test_s = time.monotonic() - start
    finally:
        path.write_text(pristine)
    cpu_s = children_cpu_s() - cpu_start
    if passed:
        status = "equivalent" if mutant.equivalent else "SURVIVED"
        return Outcome(mutant, status, mutant.equivalent or "every test passed", build_s, test_s, cpu_s)
    if mutant.equivalent:
        return Outcome(mutant, "ERROR", f"listed as equivalent but killed by {failure}", build_s, test_s, cpu_s)
    return Outcome(mutant, "killed", failure, build_s, test_s, cpu_s)


def run(mutants: Sequence[Mutant], python: str = sys.executable, workdir: Optional[Path] = None, keep: bool = False,
        timeout_s: float = 600.0, log=print) -> Tuple[List[Outcome], List[str], float]:
    """Runs `mutants`; returns their outcomes, the errors that stopped or spoiled the run, and the wall time."""
    start = time.monotonic()
    errors = stale_anchors(mutants)
    root = Path(workdir) if workdir else Path(__import__("tempfile").mkdtemp(prefix="caffe-mining-mutation-"))
    root.mkdir(parents=True, exist_ok=True)
    scratch_path = root / "repo"
    if scratch_path.exists():
        shutil.rmtree(scratch_path)
    outcomes: List[Outcome] = []
    try:
        copy_repository(scratch_path)
        scratch = Scratch(scratch_path, python, timeout_s)
        log(f"mutation: scratch copy {scratch_path} ({'ccache' if scratch.uses_ccache else 'no ccache: full rebuilds'})")
        t = time.monotonic()
        built, build_log = scratch.build()
        if not built:
            return outcomes, errors + ["the unmutated bindings do not build:\n" + last_lines(build_log)], \
                time.monotonic() - start
        core_file = scratch.imports_its_own_core()
        if not core_file.startswith(str(scratch_path)):
            return outcomes, errors + [f"the tests would not import the scratch copy's core: {core_file}"], \
                time.monotonic() - start
        baseline_build = time.monotonic() - t
        t = time.monotonic()
        passed, failure, output = scratch.test(list(TEST_FILES))
        if not passed:
            return outcomes, errors + [f"the unmutated tests fail ({failure}); no mutant can be judged:\n"
                                       + last_lines(output)], time.monotonic() - start
        log(f"mutation: baseline built in {baseline_build:.0f} s, its tests pass in {time.monotonic() - t:.0f} s")
        pristine = {m.file: (scratch_path / m.file).read_text() for m in mutants if (scratch_path / m.file).is_file()}
        for number, mutant in enumerate(mutants, 1):
            if mutant.file not in pristine:
                outcome = Outcome(mutant, "ERROR", f"no file {mutant.file}", 0, 0)
            else:
                outcome = run_mutant(scratch, mutant, pristine[mutant.file])
            outcomes.append(outcome)
            log(f"[{number:3d}/{len(mutants)}] {outcome.status:10s} {mutant.id:38s} build {outcome.build_s:5.1f} s, "
                f"tests {outcome.test_s:5.1f} s, cpu {outcome.cpu_s:5.1f} s  {outcome.detail.splitlines()[0]}")
    finally:
        if keep:
            log(f"mutation: kept {root}")
        elif not workdir:
            shutil.rmtree(root, ignore_errors=True)
    return outcomes, errors, time.monotonic() - start
