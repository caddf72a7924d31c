"""Peak extra memory of one implementation: bytes it needs beyond its inputs and outputs.

Measured in a fresh child process per (loss, implementation, N), so nothing left over from another measurement
is reused:
  1. load the libraries and run the implementation once at a tiny N (one-time library set-up is not counted);
  2. make the inputs, release free heap memory (malloc_trim), reset the peak RSS (write 5 to /proc/self/clear_refs);
  3. build the implementation (its buffers, a Caffe net) and run one forward + backward pass;
  4. extra = peak RSS (VmHWM) - RSS before step 3 - the inputs/outputs it holds in its own memory (runner.io_bytes:
     a Caffe net's input blobs and their diffs, returned gradients).
glibc's malloc is told to serve every block of 64 KiB and more with mmap and to return it on free
(MALLOC_MMAP_THRESHOLD_), so freed memory cannot hide a later allocation. Resolution: a few pages; small N
measure mostly noise of that order.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

from benchmarks import runners
from benchmarks.timing import format_bytes

TINY_N = 8


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _factories(ctx: runners.Context, loss: str, n: int, dim: int, ratio: int) -> Dict[str, Callable]:
    if loss == "hardnet":
        return runners.hardnet_factories(ctx, n, dim)
    return runners.contrastive_factories(ctx, n, dim, ratios=(ratio,))


def measure_here(loss: str, impl: str, n: int, dim: int, ratio: int, threads: int) -> dict:
    """Steps 1-4 in this process (call it in a fresh one: see measure)."""
    ctx = runners.Context.load(threads, with_torch=impl == runners.HARDNET_TORCH)
    _factories(ctx, loss, min(TINY_N, n), dim, ratio)[impl]()()
    factory = _factories(ctx, loss, n, dim, ratio)[impl]  # the inputs are made here
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = _status_kib("VmRSS")
    runner = factory()
    runner()
    peak = _status_kib("VmHWM")
    io_bytes = runner.io_bytes()
    extra = (peak - before) * 1024 - io_bytes
    return {"loss": loss, "impl": impl, "n": n, "mining_ratio": ratio if loss == "contrastive" else None,
            "peak_delta_bytes": (peak - before) * 1024, "io_bytes": io_bytes, "extra_bytes": extra}


def measure(loss: str, impl: str, n: int, dim: int, ratio: int, threads: int, timeout_s: float = 600) -> dict:
    """measure_here in a child process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    args = [sys.executable, "-m", "benchmarks.memory", loss, impl, str(n), str(dim), str(ratio), str(threads)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {args[3:]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(ctx: runners.Context, hardnet_sizes: Sequence[int], contrastive_sizes: Sequence[int],
               ratios: Sequence[int], dim: int, threads: int, log: Callable[[str], None]) -> List[dict]:
    """Every implementation of both suites at every size (each in its own child process)."""
    rows = []
    plans = [("hardnet", name, n, 1) for n in hardnet_sizes for name in runners.hardnet_factories(ctx, 2, dim)]
    for n in contrastive_sizes:
        for ratio in ratios:
            names = runners.contrastive_factories(ctx, 2, dim, ratios=(ratio,))
            plans += [("contrastive", name, n, ratio) for name in names
                      if name != runners.CONTRASTIVE_CAFFE or ratio == ratios[0]]
    for loss, name, n, ratio in plans:
        row = measure(loss, name, n, dim, ratio, threads)
        log(f"  memory {loss:11s} N={n:<6d} {name:48s} extra {format_bytes(row['extra_bytes'])}")
        rows.append(row)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    loss, impl, n, dim, ratio, threads = (argv or sys.argv[1:])
    print(json.dumps(measure_here(loss, impl, int(n), int(dim), int(ratio), int(threads))))


if __name__ == "__main__":  # the child: its BLAS thread variables come from the parent's environment
    main()
