"""What the numbers were measured on: CPU, load, thread setting, library versions, the BLAS actually loaded."""
from __future__ import annotations

import ctypes
import os
import platform
import re
from typing import Optional


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


def describe(threads: int, lib, caffe: Optional[object], torch: Optional[object]) -> dict:
    import numpy

    import caffe_mining

    lib.openblas_get_config.restype = ctypes.c_char_p  # found through the helpers' link to libopenblas
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
        "blas_libraries_loaded": loaded_libraries(r"blas"),
        "pycaffe": os.path.dirname(caffe.__file__) if caffe is not None else None,
        "torch": torch.__version__ if torch is not None else None,
    }
