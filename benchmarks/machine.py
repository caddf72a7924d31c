"""What the numbers were measured on: CPU, load, thread setting, library versions, the BLAS actually loaded."""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

OPENBLAS_KERNEL_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "openblas_kernel.py"


def _load_script(path: Path, name: str):
    """A script of the repository (scripts/ is no package) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


openblas_kernel = _load_script(OPENBLAS_KERNEL_SCRIPT, "caffe_mining_scripts_openblas_kernel")


def use_tuned_openblas_kernel(environ=os.environ) -> dict:
    """What the set-up scripts do, for a benchmark started by hand: sets OPENBLAS_CORETYPE in `environ` when
    OpenBLAS fell back to a generic kernel on this CPU, never over a value already there. Call it before OpenBLAS
    loads (before NumPy): the detection loads it in a child process, whose kernel is then fixed. Returns how the
    variable came to be, for the results' header."""
    kernel = openblas_kernel
    if kernel.VARIABLE in environ:
        fallback = environ.get(kernel.FALLBACK_MARKER)
        source = (f"set by the set-up's detection (OpenBLAS had fallen back to {fallback})" if fallback
                  else "preset in the environment (left as it is)")
        return {"value": environ[kernel.VARIABLE], "source": source}
    done = subprocess.run([sys.executable, str(OPENBLAS_KERNEL_SCRIPT), "--json"], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        return {"value": None, "source": f"the detection failed: {done.stderr.strip()[-200:]}"}
    report = json.loads(done.stdout)
    if report["choice"] is None:
        return {"value": None, "source": report["reason"]}
    environ[kernel.VARIABLE] = report["choice"]
    environ[kernel.FALLBACK_MARKER] = report["corename"]
    print(kernel.Report(**report).message(), file=sys.stderr, flush=True)
    return {"value": report["choice"], "source": f"set by the benchmark's detection: {report['reason']}"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def loaded_libraries(pattern: str) -> list:
    """Paths of the shared libraries mapped into this process whose file name matches `pattern`."""
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if path.startswith("/") and re.search(pattern, os.path.basename(path)):
                found.add(os.path.realpath(path))
    return sorted(found)


def describe(threads: int, lib, caffe: Optional[object], torch: Optional[object],
             openblas_coretype: Optional[dict] = None) -> dict:
    import numpy

    import caffe_mining
    from caffe_mining import _core

    lib.openblas_get_config.restype = ctypes.c_char_p  # found through the helpers' link to libopenblas
    lib.openblas_get_corename.restype = ctypes.c_char_p
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_at_start": load_average(),
        "threads": threads,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "caffe_mining": caffe_mining.__version__,
        "openblas_of_the_core": lib.openblas_get_config().decode(),
        "openblas_kernel": lib.openblas_get_corename().decode(),  # what the timed SGEMM and the core ran with
        "openblas_coretype": openblas_coretype or {"value": os.environ.get("OPENBLAS_CORETYPE"), "source": "?"},
        "hardnet_cpu_lanes": _core.hardnet_cpu_lanes(),  # the core's row scan: 8 AVX2, 4 SSE2
        "blas_libraries_loaded": loaded_libraries(r"blas"),
        "pycaffe": os.path.dirname(caffe.__file__) if caffe is not None else None,
        "torch": torch.__version__ if torch is not None else None,
    }
