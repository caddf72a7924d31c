"""`python -m benchmarks run --device gpu`: both losses on the GPU through caffe_mining's CUDA bindings.

HardNetLoss forward + backward (MIN, MIN + anchor_swap, RANDOM, AVERAGE) against one cuBLAS SGEMM of the same size
(CuPy's matmul: N x N x D, the distance GEMM that any formulation needs) and against the authors' PyTorch
formulation (benchmarks/hardnet_torch.py) on the same GPU. MiningContrastiveLoss forward + backward, and its
forward at D = 1 (where the selection dominates), against a full device sort of the N costs (CuPy argsort).

Timing: CUDA events on the default stream around each call, after warm-up calls; the median over the timed calls
(the bindings return only once their results are complete, so an event pair spans the whole call, its
host-side checks and allocations included). Needs a GPU, caffe_mining._core_cuda and CuPy; PyTorch is optional.
Without them it refuses (exit status 2) and says why. Caffe's ContrastiveLoss GPU layer is timed by
scripts/device_check.sh with `caffe time -gpu 0` (pycaffe is not carried to the GPU machine).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from benchmarks import inputs

HARDNET_MODES = {  # name: keyword arguments of caffe_mining.hardnet_loss
    "MIN": dict(batch_reduce="MIN"),
    "MIN + anchor_swap": dict(batch_reduce="MIN", anchor_swap=True),
    "RANDOM": dict(batch_reduce="RANDOM"),
    "AVERAGE": dict(batch_reduce="AVERAGE"),
}
SGEMM = "cuBLAS SGEMM (N x N x D)"
TORCH = "PyTorch, authors' formulation (MIN)"
SORT = "CuPy argsort of the N costs"
TARGETS = ("HardNet <= 1.5x SGEMM at N >= 4096; HardNet MIN >= 10x faster than PyTorch at N = 4096; "
           "MiningContrastiveLoss selection (forward at D = 1) <= 0.5x a full sort at 1M")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def unavailable_reason() -> Optional[str]:
    """None when the GPU suite can run, else why not."""
    from caffe_mining import device

    reason = device.unavailable_reason()
    if reason:
        return reason
    try:
        import cupy  # noqa: F401
    except ImportError as error:
        return f"CuPy is needed for the device arrays and the baselines ({error})"
    return None


def time_gpu(call: Callable[[], object], warmup: int, rounds: int) -> List[float]:
    """Seconds of each of `rounds` calls, timed with CUDA events on the default stream after `warmup` calls."""
    import cupy

    for _ in range(warmup):
        call()
    cupy.cuda.Device().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    seconds = []
    for _ in range(rounds):
        start.record()
        call()
        stop.record()
        stop.synchronize()
        seconds.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return seconds


def _row(suite: str, n: int, dim: int, impl: str, seconds: List[float], loss: Optional[float], **extra) -> dict:
    row = dict(suite=suite, n=n, dim=dim, impl=impl, median_s=float(np.median(seconds)),
               spread=float((np.percentile(seconds, 75) - np.percentile(seconds, 25)) / np.median(seconds)),
               loss=loss)
    row.update(extra)
    return row


def run_hardnet(sizes, dim, warmup, rounds, torch) -> List[dict]:
    import cupy

    import caffe_mining
    from benchmarks import hardnet_torch

    rows = []
    for n in sizes:
        _log(f"HardNetLoss on the GPU, N={n} D={dim}")
        anchor, positive = inputs.hardnet_batch(n, dim)
        a, p = cupy.asarray(anchor), cupy.asarray(positive)
        uniforms = cupy.asarray(np.random.default_rng(0).random(n).astype(np.float32))
        sgemm = time_gpu(lambda: cupy.matmul(a, p.T), warmup, rounds)
        rows.append(_row("hardnet", n, dim, SGEMM, sgemm, None))
        torch_median = None
        if torch is not None:
            formulation = hardnet_torch.TorchHardNet(torch, anchor, positive, device="cuda")
            torch_seconds = time_gpu(formulation, warmup, rounds)
            torch_median = float(np.median(torch_seconds))
            rows.append(_row("hardnet", n, dim, TORCH, torch_seconds, formulation()))
        for mode, kwargs in HARDNET_MODES.items():
            def call(kwargs=kwargs):
                return caffe_mining.hardnet_loss(a, p, uniforms=uniforms, check_finite=False, **kwargs)
            seconds = time_gpu(call, warmup, rounds)
            median = float(np.median(seconds))
            rows.append(_row("hardnet", n, dim, f"HardNetLoss {mode} (fwd + bwd)", seconds, call().loss,
                             vs_sgemm=median / float(np.median(sgemm)),
                             vs_torch=median / torch_median if torch_median else None))
            del call
        del a, p
        cupy.get_default_memory_pool().free_all_blocks()
    return rows


def run_contrastive(sizes, dim, ratios, warmup, rounds) -> List[dict]:
    import cupy

    import caffe_mining

    rows = []
    for n in sizes:
        _log(f"MiningContrastiveLoss on the GPU, N={n} D={dim}")
        for d in (dim, 1):
            feat, feat_p, sim = inputs.contrastive_batch(n, d)
            f, fp, s = cupy.asarray(feat), cupy.asarray(feat_p), cupy.asarray(sim)
            costs = caffe_mining.mining_contrastive_loss(f, fp, s, backward=False, check_finite=False).cost
            sort = time_gpu(lambda: cupy.argsort(costs), warmup, rounds)
            rows.append(_row("contrastive", n, d, SORT, sort, None))
            for ratio in ratios:
                for backward in ((True, False) if d == dim else (False,)):
                    def call(ratio=ratio, backward=backward):
                        return caffe_mining.mining_contrastive_loss(f, fp, s, mining_ratio=ratio, backward=backward,
                                                                    check_finite=False)
                    seconds = time_gpu(call, warmup, rounds)
                    kind = "fwd + bwd" if backward else "fwd"
                    rows.append(_row("contrastive", n, d, f"MiningContrastiveLoss r={ratio} ({kind})", seconds,
                                     call().loss, vs_sort=float(np.median(seconds) / np.median(sort))))
            del f, fp, s, costs
            cupy.get_default_memory_pool().free_all_blocks()
    return rows


def _target(row: dict) -> str:
    """Whether the row meets its target of the issue, where one applies."""
    verdicts = []
    if row["suite"] == "hardnet" and row.get("vs_sgemm") is not None and row["n"] >= 4096:
        verdicts.append(("met" if row["vs_sgemm"] <= 1.5 else "missed") + " (<= 1.5x SGEMM)")
    if row["suite"] == "hardnet" and row["impl"].startswith("HardNetLoss MIN (") and row["n"] == 4096 \
            and row.get("vs_torch"):
        verdicts.append(("met" if row["vs_torch"] <= 0.1 else "missed") + " (>= 10x faster than PyTorch)")
    if row["suite"] == "contrastive" and row["dim"] == 1 and row["n"] >= 1 << 20 and row.get("vs_sort"):
        verdicts.append(("met" if row["vs_sort"] <= 0.5 else "missed") + " (<= 0.5x sort)")
    return "; ".join(verdicts)


def markdown(results: dict) -> str:
    lines = [f"GPU benchmark, {results['date']}: {results['device']}", "",
             f"Targets: {TARGETS}", "",
             "| suite | N | D | implementation | median | IQR | × SGEMM | × PyTorch | × sort | loss | target |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    fmt = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
    for row in results["rows"]:
        loss = "" if row["loss"] is None else f"{row['loss']:.6g}"
        lines.append(f"| {row['suite']} | {row['n']} | {row['dim']} | {row['impl']} | {row['median_s'] * 1e3:.3f} ms "
                     f"| {row['spread']:.0%} | {fmt(row.get('vs_sgemm'))} | {fmt(row.get('vs_torch'))} "
                     f"| {fmt(row.get('vs_sort'))} | {loss} | {_target(row)} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    reason = unavailable_reason()
    if reason:
        _log(f"GPU benchmark did not run: {reason}")
        return 2
    import cupy

    from benchmarks.hardnet_torch import import_torch

    torch = None if args.no_torch else import_torch(args.threads)
    if torch is not None and not torch.cuda.is_available():
        torch = None
    if torch is None and not args.no_torch:
        _log("PyTorch with CUDA not importable: the authors' formulation is left out")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "device": f"{props['name'].decode()} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})",
               "settings": {"dim": args.dim, "warmup": args.warmup, "rounds": args.rounds}, "rows": []}
    if args.suite in ("hardnet", "all"):
        results["rows"] += run_hardnet(args.gpu_hardnet_sizes, args.dim, args.warmup, args.rounds, torch)
    if args.suite in ("contrastive", "all"):
        results["rows"] += run_contrastive(args.gpu_contrastive_sizes, args.dim, args.ratios, args.warmup,
                                           args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out / "results_gpu.md").write_text(table)
    (out / "results_gpu.json").write_text(json.dumps(results, indent=1))
    print(table)
    return 0
