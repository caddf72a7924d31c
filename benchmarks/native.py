"""The benchmark's C++ helpers (benchmarks/native/*.cpp with the core's CPU sources), compiled once and loaded.

Compiled with the flags libcaffe's Release build gives the core (-O3 -DNDEBUG) and linked against the same
OpenBLAS (-lopenblas) as the core in libcaffe and in caffe_mining._core. The library is cached under
$CAFFE_MINING_CACHE/bench-native (default ~/.cache/caffe-mining) by a hash of its sources and flags.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "benchmarks" / "native").glob("*.cpp")) + sorted(
    (REPO / "caffe_layers" / "src" / "caffe" / "mining").glob("*.cpp"))
HEADERS = sorted((REPO / "caffe_layers" / "include" / "caffe_mining").rglob("*.hpp")) + sorted(
    (REPO / "caffe_layers" / "src" / "caffe" / "mining").glob("*.inc"))  # common/, losses/...; .inc: included
FLAGS = ["-O3", "-DNDEBUG", "-std=c++17", "-fPIC", "-shared", f"-I{REPO / 'caffe_layers' / 'include'}"]
LIBS = ["-lopenblas"]

_FLOAT_P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")


def cache_dir() -> Path:
    base = os.environ.get("CAFFE_MINING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "caffe-mining")
    return Path(base) / "bench-native"


def library_path() -> Path:
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    digest.update(" ".join(FLAGS + LIBS).encode())
    return cache_dir() / f"libcm_bench_{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """Compiles the library unless the cached one matches the sources; returns its path."""
    target = library_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as partial:
        partial_path = Path(partial.name)
    command = [os.environ.get("CXX", "g++"), *FLAGS, *map(str, SOURCES), "-o", str(partial_path), *LIBS]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        partial_path.unlink(missing_ok=True)
        raise RuntimeError(f"compiling the benchmark helpers failed:\n{' '.join(command)}\n{error.stderr}") from error
    partial_path.replace(target)  # atomic: a concurrent run sees the old state or the whole library
    return target


def load() -> ctypes.CDLL:
    """The compiled helpers with their C signatures declared."""
    lib = ctypes.CDLL(str(build()))
    c_int, c_float, c_void_p, c_size_t = ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_size_t
    lib.bench_sgemm_abt.argtypes = [c_int, c_int, _FLOAT_P, _FLOAT_P, _FLOAT_P]
    lib.bench_sgemm_abt.restype = None
    lib.bench_hardnet_create.argtypes = [c_int, c_int, c_int]
    lib.bench_hardnet_create.restype = c_void_p
    lib.bench_hardnet_destroy.argtypes = [c_void_p]
    lib.bench_hardnet_bytes.argtypes = [c_void_p]
    lib.bench_hardnet_bytes.restype = c_size_t
    lib.bench_hardnet_forward_backward.argtypes = [c_void_p, c_int, _FLOAT_P, _FLOAT_P, _FLOAT_P, _FLOAT_P,
                                                   _FLOAT_P]
    lib.bench_hardnet_forward_backward.restype = c_float
    for prefix in ("bench_contrastive", "bench_multimap"):
        getattr(lib, f"{prefix}_create").argtypes = [c_int, c_int]
        getattr(lib, f"{prefix}_create").restype = c_void_p
        getattr(lib, f"{prefix}_destroy").argtypes = [c_void_p]
        run = getattr(lib, f"{prefix}_forward_backward")
        run.argtypes = [c_void_p, _FLOAT_P, _FLOAT_P, _FLOAT_P, c_float, c_int, _FLOAT_P, _FLOAT_P]
        run.restype = c_float
    lib.bench_contrastive_bytes.argtypes = [c_void_p]
    lib.bench_contrastive_bytes.restype = c_size_t
    return lib


class NativeHandle:
    """Owns a buffer set created by bench_<kind>_create; frees it when collected."""

    def __init__(self, lib: ctypes.CDLL, kind: str, *sizes: int):
        self._destroy = getattr(lib, f"bench_{kind}_destroy")
        self.pointer = getattr(lib, f"bench_{kind}_create")(*sizes)
        if not self.pointer:
            raise MemoryError(f"bench_{kind}_create{sizes} failed")

    def __del__(self):
        if getattr(self, "pointer", None):
            self._destroy(self.pointer)
            self.pointer = None
