"""scripts/build.sh on its own, as the README shows it: on a fresh machine (no virtual environment yet) it must
install what is missing before it configures, not fail on a missing interpreter.

The scripts run from a copy of scripts/ in which install-deps.sh is replaced by a stand-in that only records its
call and creates the venv's python, and cmake by one on PATH that records its arguments: no package is installed
and nothing is built.
"""
import os
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fresh_machine(tmp_path):
    repo, cache, bin_dir, log = tmp_path / "repo", tmp_path / "cache", tmp_path / "bin", tmp_path / "calls.log"
    shutil.copytree(os.path.join(REPO, "scripts"), repo / "scripts")
    executable(repo / "scripts" / "install-deps.sh", f"""#!/usr/bin/env bash
source "$(dirname "${{BASH_SOURCE[0]}}")/env.sh"
echo install-deps >> {log}
mkdir -p "$CAFFE_MINING_VENV/bin" && ln -sf "$(command -v python3)" "$CAFFE_MINING_PYTHON"
""")
    bin_dir.mkdir()
    executable(bin_dir / "cmake", f"""#!/usr/bin/env bash
for arg in "$@"; do case "$arg" in -DPython3_EXECUTABLE=*) test -x "${{arg#*=}}" || exit 7 ;; esac; done
echo "cmake $*" >> {log}
""")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CAFFE_MINING_CACHE=str(cache))
    env.pop("CAFFE_MINING_BUILD_DIR", None)
    env.pop("CAFFE_SOURCE_DIR", None)
    return repo, cache, log, env


def test_build_alone_installs_first_then_configures_with_the_venv_python(fresh_machine):
    repo, cache, log, env = fresh_machine
    assert not (cache / "venv").exists()
    result = subprocess.run(["bash", str(repo / "scripts" / "build.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "install-deps"
    assert calls[1].startswith("cmake -S ") and f"-DPython3_EXECUTABLE={cache}/venv/bin/python" in calls[1]
    assert calls[2].startswith("cmake --build ")


@pytest.mark.parametrize("script", ["test.sh", "main.sh"])
def test_test_and_main_install_through_build(script):
    """install-deps.sh runs once per command: build.sh calls it, test.sh and main.sh call build.sh."""
    text = open(os.path.join(REPO, "scripts", script)).read()
    assert "install-deps.sh" not in text and "scripts/build.sh" in text
