"""The CUDA kernels' logic, checked without a GPU: tests/emulation/<loss>_gpu_emulation.cpp run the kernels'
per-element steps (the host/device functions of each loss's <loss>_gpu_steps.hpp, the radix:: steps of
contrastive_mining.hpp) serially, in the order the kernels run them, against the CPU core, and count bit mismatches. A planted bug (an
ordering or rounding change) must show up as mismatches, so the comparison is known to bite. Each loss's tests are in
tests/test_<loss>_gpu_emulation.py; a harness names the core sources it links on its "// emulation-sources:" line.

What a GPU run adds on top (tests/gpu/): cuBLAS's dot products and the device's norms differ from cblas in the last
bits by design, so there the kernels are compared with the CPU on the same inputs with the tolerances of the header."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SOURCES_LINE = re.compile(r"^// emulation-sources: (.+)$", re.M)
SEEDS = [1, 2, 3]


def sources(name):
    """The harness tests/emulation/<name>.cpp and the core sources its "// emulation-sources:" line names."""
    harness = f"tests/emulation/{name}.cpp"
    return [harness, *_SOURCES_LINE.search((ROOT / harness).read_text()).group(1).split()]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """Compiles a harness with the system C++ compiler (as setup.py builds the core) and returns a runner."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.fail("no C++ compiler (g++) to build the GPU emulation harnesses", pytrace=False)
    out = tmp_path_factory.mktemp("emulation")
    built = {}

    def run(name, *args):
        if name not in built:
            binary = out / name
            command = [compiler, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{ROOT / 'caffe_layers/include'}",
                       *[str(ROOT / s) for s in sources(name)], "-lopenblas", "-o", str(binary)]
            subprocess.run(command, check=True, capture_output=True, text=True)
            built[name] = binary
        result = subprocess.run([str(built[name]), *map(str, args)], check=True, capture_output=True, text=True)
        match = re.search(r"cases=(\d+) compared=(\d+) mismatches=(\d+)\s*$", result.stdout)
        assert match, result.stdout
        cases, compared, mismatches = map(int, match.groups())
        assert cases > 0 and compared > 0, result.stdout
        return mismatches, result.stdout

    return run
