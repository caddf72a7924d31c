#!/usr/bin/env python3
"""OpenBLAS's kernel: a DYNAMIC_ARCH OpenBLAS that fell back to a generic kernel on a CPU it does not know, and the
OPENBLAS_CORETYPE that gives it its tuned kernel back.

Debian 12's OpenBLAS 0.3.21 does not know recent Xeons (family 6 model 207): it runs its generic Prescott (SSE3)
kernel there, and one SGEMM N=1024, D=128 takes 8.4 ms instead of 1.9 ms with OPENBLAS_CORETYPE=SkylakeX. Every
Caffe layer then runs about 4x slower. scripts/test.sh, scripts/main.sh, scripts/device_check.sh and the benchmark
ask this script, and set what it chooses for everything they run; a value already in the environment is never
overridden (a workplace may preset it for correctness on some processors).

    python3 scripts/openblas_kernel.py            # what OpenBLAS runs here and what the set-up does about it
    python3 scripts/openblas_kernel.py --shell    # for the scripts: `export ...` or nothing; one line on stderr
                                                  # when it sets the variable
    python3 scripts/openblas_kernel.py --json     # the same as JSON (the benchmark's record)

Only the standard library: it runs before any virtual environment exists, in any Python.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import FrozenSet, Iterable, Optional

VARIABLE = "OPENBLAS_CORETYPE"
# Set beside VARIABLE by --shell, so that a later reader (the benchmark) can tell "set by this detection" from
# "preset": the name of the generic kernel OpenBLAS had fallen back to.
FALLBACK_MARKER = "CAFFE_MINING_OPENBLAS_FALLBACK"
# The soname libcaffe, caffe_mining._core and the benchmark's helpers link (-lopenblas): the dynamic loader
# resolves it to the same file for all of them (Debian: the openblas-pthread alternative).
DEFAULT_LIBRARY = "libopenblas.so.0"

# The pre-AVX (SSE2 to SSE4) kernels of DYNAMIC_ARCH's x86-64 list (driver/others/dynamic.c, corename[]).
# get_coretype() gives none of them to a CPU with AVX2: there they mean OpenBLAS did not recognise the CPU.
# Prescott is what dynamic.c falls back to for every CPU it does not know (and what it puts in place of the
# 32-bit-only Katmai, Coppermine, Northwood, Banias and Athlon on x86-64); the rest serve CPUs without AVX.
# The AVX-era kernels (Sandybridge, Bulldozer to Excavator, Haswell, Zen, SkylakeX, Cooperlake) are left alone:
# OpenBLAS picks them knowingly, e.g. Haswell on an AVX-512 CPU whose OS does not enable AVX-512 state.
GENERIC_CORES = frozenset(name.lower() for name in (
    "Prescott", "Katmai", "Coppermine", "Northwood", "Banias", "Athlon", "Core2", "Penryn", "Dunnington",
    "Nehalem", "Atom", "Nano", "Opteron", "Opteron_SSE3", "Barcelona", "Bobcat"))

# What each tuned kernel executes (/proc/cpuinfo flag names), best first. SkylakeX's kernels are built for
# Skylake-SP (AVX-512 F, CD, BW, DQ, VL); Haswell's for AVX2 with FMA. SkylakeX rather than Cooperlake for AVX-512:
# Cooperlake adds only bfloat16 kernels (sbgemm), SGEMM is SkylakeX's, and 0.3.21 gives Haswell to a forced
# Cooperlake on a CPU without avx512_bf16. Forcing a kernel whose instructions the CPU lacks is accepted by
# OpenBLAS and dies with SIGILL at the first GEMM (SkylakeX on an AVX2-only CPU does): hence the flags, and
# confirm() running a GEMM in a child process before anything is set.
AVX2 = frozenset({"avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
TUNED_KERNELS = (("SkylakeX", AVX512, "AVX-512"), ("Haswell", AVX2, "AVX2 and FMA"))


@dataclass(frozen=True)
class Choice:
    coretype: Optional[str]  # the value to give OPENBLAS_CORETYPE; None: leave it as it is
    reason: str


def choose(corename: str, cpu_flags: Iterable[str], dynamic_arch: bool, known_cores: Iterable[str],
           preset: Optional[str]) -> Choice:
    """The decision, from what OpenBLAS runs (corename, as openblas_get_corename() says it), the CPU's flags,
    whether the library picks its kernel at run time (DYNAMIC_ARCH), the kernel names it knows, and the value of
    OPENBLAS_CORETYPE already in the environment (None when unset; an empty value counts as set)."""
    flags = frozenset(cpu_flags)
    known = {name.lower() for name in known_cores}
    if preset is not None:
        return Choice(None, f"{VARIABLE} is already set ({preset!r}): left as it is")
    if not dynamic_arch:
        return Choice(None, f"this OpenBLAS is built for one target ({corename}), not DYNAMIC_ARCH: "
                            f"{VARIABLE} has no effect on it")
    if corename.lower() not in GENERIC_CORES:
        return Choice(None, f"OpenBLAS runs its {corename} kernel, its own choice for this CPU: nothing to do")
    for name, needs, label in TUNED_KERNELS:
        if needs <= flags and name.lower() in known:
            return Choice(name, f"OpenBLAS fell back to its generic {corename} kernel on a CPU with {label}")
    if AVX2 <= flags:
        return Choice(None, f"OpenBLAS runs its generic {corename} kernel on a CPU with AVX2, but this library "
                            f"knows none of {[name for name, _, _ in TUNED_KERNELS]}: nothing it can be given")
    return Choice(None, f"OpenBLAS runs its {corename} kernel on a CPU without AVX2: nothing faster to give it")


# ---------------------------------------------------------------------------------------------------------------
# What this machine has

def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The x86 feature flags of the first processor (empty where there are none, e.g. on ARM)."""
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def loaded_path(library: ctypes.CDLL) -> str:
    """The file a loaded library came from (after links and the loader's search)."""
    symbol = ctypes.cast(library.openblas_get_config, ctypes.c_void_p)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(part, 16) for part in fields[0].split("-"))
            if low <= symbol.value < high and len(fields) >= 6:
                return os.path.realpath(fields[5])
    return library._name


def known_cores(path: str) -> FrozenSet[str]:
    """The kernel names in the library's string table (what OPENBLAS_CORETYPE can name)."""
    with open(path, "rb") as binary:
        data = binary.read()
    candidates = {name for name, _, _ in TUNED_KERNELS} | {"Prescott", "Zen", "Cooperlake", "SapphireRapids"}
    return frozenset(name for name in candidates if b"\0" + name.encode() + b"\0" in data)


@dataclass
class OpenBlas:
    path: str
    config: str
    corename: str
    dynamic_arch: bool
    known_cores: FrozenSet[str]


def inspect(library: str = DEFAULT_LIBRARY) -> OpenBlas:
    """Loads OpenBLAS into this process and asks it (its kernel is then fixed for this process)."""
    lib = ctypes.CDLL(library)
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    config = lib.openblas_get_config().decode()
    path = loaded_path(lib)
    return OpenBlas(path, config, lib.openblas_get_corename().decode(), "DYNAMIC_ARCH" in config.split(),
                    known_cores(path))


def probe(library: str) -> dict:
    """The kernel this process's OpenBLAS runs and one SGEMM through it, checked exactly (small integers: every
    product and sum is exact in float32, whatever the kernel's order). M N K = 96 96 32 is above the sizes that
    OpenBLAS's small-matrix kernels take (M N K <= 2^18 on SkylakeX), so its main GEMM kernel runs."""
    lib = ctypes.CDLL(library)
    lib.openblas_get_corename.restype = ctypes.c_char_p
    m, k = 96, 32
    a = [float((3 * i + 5 * p) % 7 - 3) for i in range(m) for p in range(k)]
    b = [float((2 * p + 7 * j) % 5 - 2) for p in range(k) for j in range(m)]
    out = (ctypes.c_float * (m * m))()
    # cblas_sgemm(RowMajor=101, NoTrans=111, NoTrans=111, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    lib.cblas_sgemm(101, 111, 111, m, m, k, ctypes.c_float(1.0), (ctypes.c_float * (m * k))(*a), k,
                    (ctypes.c_float * (k * m))(*b), m, ctypes.c_float(0.0), out, m)
    exact = [sum(a[i * k + p] * b[p * m + j] for p in range(k)) for i in range(m) for j in range(m)]
    return {"corename": lib.openblas_get_corename().decode(), "sgemm_exact": list(out) == exact}


def confirm(coretype: str, library: str = DEFAULT_LIBRARY) -> Optional[str]:
    """None when a child process with OPENBLAS_CORETYPE=coretype runs that kernel and computes a GEMM right;
    otherwise what went wrong (the kernel was not taken, a wrong result, or the child died: SIGILL)."""
    env = dict(os.environ, **{VARIABLE: coretype})
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", "--library", library],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"the child died (status {done.returncode}) {done.stderr.strip()[-200:]}"
    result = json.loads(done.stdout)
    if result["corename"].lower() != coretype.lower():
        return f"OpenBLAS ran {result['corename']} instead"
    if not result["sgemm_exact"]:
        return "its SGEMM gave a wrong result"
    return None


@dataclass
class Report:
    library: str
    config: str
    corename: str
    dynamic_arch: bool
    preset: Optional[str]
    choice: Optional[str]  # what the scripts set (chosen and confirmed); None: nothing
    reason: str

    def message(self) -> str:
        """The one line the set-up prints when it sets the variable."""
        return (f"openblas: {self.reason}; {VARIABLE}={self.choice} is set for everything this runs. "
                f"For your own runs: export {VARIABLE}={self.choice}")


def detect(library: str = DEFAULT_LIBRARY, environ=os.environ, cpuinfo: str = "/proc/cpuinfo") -> Report:
    openblas = inspect(library)
    preset = environ.get(VARIABLE)
    picked = choose(openblas.corename, cpu_flags(cpuinfo), openblas.dynamic_arch, openblas.known_cores, preset)
    choice, reason = picked.coretype, picked.reason
    if choice is not None:
        problem = confirm(choice, library)
        if problem is not None:
            choice, reason = None, f"{reason}, but {VARIABLE}={picked.coretype} failed its check ({problem}): not set"
        else:
            reason += f"; {picked.coretype} checked (a GEMM in a child process)"
    return Report(openblas.path, openblas.config, openblas.corename, openblas.dynamic_arch, preset, choice, reason)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--shell", action="store_true", help="print `export ...` when a kernel is chosen, else nothing")
    mode.add_argument("--json", action="store_true", help="the report as JSON")
    mode.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # confirm()'s child
    parser.add_argument("--library", default=DEFAULT_LIBRARY, help=f"the OpenBLAS to ask (default {DEFAULT_LIBRARY})")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.library)))
        return 0
    try:
        report = detect(args.library)
    except (OSError, AttributeError) as error:  # no OpenBLAS, or a library that is not OpenBLAS
        if args.shell:
            return 0  # nothing to set; the build reports a missing OpenBLAS itself
        print(f"openblas: cannot ask {args.library}: {error}", file=sys.stderr)
        return 1
    if args.shell:
        if report.choice is not None:
            print(f"export {VARIABLE}={report.choice} {FALLBACK_MARKER}={report.corename}")
            print(report.message(), file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(asdict(report), indent=1))
        return 0
    print(f"library:      {report.library}\nconfig:       {report.config}\nkernel:       {report.corename}\n"
          f"{VARIABLE}: {report.preset if report.preset is not None else '(unset)'}\ndecision:     {report.reason}")
    print(f"set-up sets:  {VARIABLE}={report.choice}" if report.choice else "set-up sets:  nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
