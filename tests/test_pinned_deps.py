"""The Python packages are installed at pinned versions: scripts/python-constraints.txt for the project's virtual
environment (scripts/install-deps.sh) and benchmarks/torch-constraints.txt for the optional torch folder."""
import os
import re
import shutil
import stat
import subprocess
import sys
from importlib import metadata

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_DEPS = os.path.join(REPO, "scripts", "install-deps.sh")
CONSTRAINTS = os.path.join(REPO, "scripts", "python-constraints.txt")
TORCH_CONSTRAINTS = os.path.join(REPO, "benchmarks", "torch-constraints.txt")
PYTHON_DEPS = os.path.join(REPO, "scripts", "python_deps.py")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    found = {}
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            name, equals, version = line.partition("==")
            assert equals and version, f"{path}: not an exact pin: {line!r}"
            assert canonical(name) not in found, f"{path}: {name} pinned twice"
            found[canonical(name)] = version
    return found


def named_packages():
    """The python_packages array of install-deps.sh, as bash reads it."""
    script = f'eval "$(grep "^python_packages=" {INSTALL_DEPS})"; printf "%s\\n" "${{python_packages[@]}}"'
    names = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout.split()
    assert "numpy" in names and "pytest" in names
    return names


def test_constraints_pin_every_package_install_deps_names():
    pinned = pins(CONSTRAINTS)
    missing = [name for name in named_packages() + ["pip"] if canonical(name) not in pinned]
    assert not missing, f"not pinned in scripts/python-constraints.txt: {missing}"


def test_torch_constraints_pin_torch_and_pytorch_metric_learning():
    pinned = pins(TORCH_CONSTRAINTS)
    assert "torch" in pinned and "pytorch-metric-learning" in pinned


def test_setup_torch_installs_with_the_constraints(monkeypatch, tmp_path):
    sys.path.insert(0, REPO)
    try:
        from benchmarks import setup_torch
    finally:
        sys.path.remove(REPO)
    calls = []
    monkeypatch.setattr(setup_torch, "torch_site", lambda: tmp_path)
    monkeypatch.setattr(setup_torch.subprocess, "call", lambda command: calls.append(command) or 0)
    assert setup_torch.install() == 0
    command = calls[0]
    assert command[command.index("-c") + 1] == TORCH_CONSTRAINTS
    assert command[-2:] == ["torch", "pytorch-metric-learning"]


def stale(constraints, *names):
    result = subprocess.run([sys.executable, PYTHON_DEPS, "stale", str(constraints), *names], capture_output=True,
                            text=True)
    return result.returncode, result.stdout.split(), result.stderr


def test_stale_lists_what_is_missing_or_at_another_version(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# comment\n"
                           f"numpy=={metadata.version('numpy')}\n"
                           "pytest==0.0.1\n"                       # named, at another version
                           "iniconfig==0.0.1\n"                    # not named, installed at another version
                           "no-such-package-here==1.0\n")          # not named, not installed: nothing to do
    assert stale(constraints, "numpy", "pytest") == (0, ["pytest", "iniconfig"], "")
    constraints.write_text(f"numpy=={metadata.version('numpy')}\nno_such_package_here==1.0\n")
    assert stale(constraints, "numpy", "No.Such-Package_here") == (0, ["No.Such-Package_here"], "")
    code, _, error = stale(constraints, "numpy", "pytest")
    assert code != 0 and "pytest has no pin" in error


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_install_deps_reinstalls_a_package_at_another_version_with_the_constraints(tmp_path):
    """A venv that exists with another pytest than the pinned one: install-deps runs pip with -c for it."""
    repo, cache, bin_dir, log = tmp_path / "repo", tmp_path / "cache", tmp_path / "bin", tmp_path / "pip.log"
    shutil.copytree(os.path.join(REPO, "scripts"), repo / "scripts")
    constraints = repo / "scripts" / "python-constraints.txt"
    constraints.write_text(constraints.read_text().replace(f"\npytest=={pins(CONSTRAINTS)['pytest']}\n",
                                                           "\npytest==0.0.1\n"))
    venv_python = cache / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    # The venv's python: pip calls are logged, not run; the rest (python_deps.py) runs in this test's interpreter.
    executable(venv_python, f'#!/usr/bin/env bash\nif [ "$1 $2" = "-m pip" ]; then echo "$*" >> {log}; exit 0; fi\n'
                            f'exec {sys.executable} "$@"\n')
    bin_dir.mkdir()
    executable(bin_dir / "dpkg-query", "#!/bin/sh\necho 'install ok installed'\n")  # every Debian package present
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CAFFE_MINING_CACHE=str(cache))
    for name in ("pip", "numpy", "protobuf", "scikit-image", "h5py", "matplotlib", "scikit-learn", "pybind11",
                 "hypothesis"):
        if pins(CONSTRAINTS)[name] != metadata.version(name):
            pytest.skip(f"this environment's {name} is not at its pin: the test needs only pytest to differ")
    result = subprocess.run(["bash", str(repo / "scripts" / "install-deps.sh")], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls == [f"-m pip install -q -c {constraints} pip", f"-m pip install -q -c {constraints} pytest"]
