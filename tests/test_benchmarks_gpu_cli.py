"""The GPU benchmark suite (`python -m benchmarks run --device gpu`) without a GPU: it is declared, parses its
sizes, refuses cleanly (status 2, the reason on stderr, no results written), and its table marks the targets.
Its timings can only come from a GPU machine (scripts/device_check.sh); none has run it yet."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of the repository, not an installed package

from benchmarks import gpu  # noqa: E402
from benchmarks.__main__ import parse_args  # noqa: E402


def test_gpu_sizes_and_smoke():
    args = parse_args(["run", "--device", "gpu"])
    assert (args.device, args.gpu_hardnet_sizes, args.gpu_contrastive_sizes) == ("gpu", [1024, 4096, 16384],
                                                                                 [65536, 1 << 20])
    smoke = parse_args(["run", "--device", "gpu", "--smoke"])
    assert (smoke.gpu_hardnet_sizes, smoke.gpu_contrastive_sizes, smoke.rounds) == ([1024], [65536], 3)
    assert parse_args(["run"]).device == "cpu"


def test_refuses_without_a_gpu(tmp_path):
    if gpu.unavailable_reason() is None:
        pytest.skip("a GPU answers here: scripts/device_check.sh runs the suite itself")
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--device", "gpu", "--smoke", "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"GPU benchmark did not run: {gpu.unavailable_reason()}" in done.stderr
    assert not (tmp_path / "out").exists() and done.stdout == ""


def test_table_marks_the_targets():
    rows = [dict(suite="hardnet", n=4096, dim=128, impl="HardNetLoss MIN (fwd + bwd)", median_s=2e-3, spread=0.01,
                 loss=0.5, vs_sgemm=1.4, vs_torch=0.05),
            dict(suite="hardnet", n=4096, dim=128, impl="HardNetLoss AVERAGE (fwd + bwd)", median_s=4e-3,
                 spread=0.02, loss=0.7, vs_sgemm=2.0, vs_torch=0.2),
            dict(suite="hardnet", n=1024, dim=128, impl="HardNetLoss MIN (fwd + bwd)", median_s=1e-3, spread=0.0,
                 loss=0.5, vs_sgemm=3.0, vs_torch=0.5),
            dict(suite="contrastive", n=1 << 20, dim=1, impl="MiningContrastiveLoss r=4 (fwd)", median_s=1e-4,
                 spread=0.0, loss=0.1, vs_sort=0.6)]
    table = gpu.markdown(dict(date="today", device="a GPU", rows=rows)).splitlines()
    assert table[-4].endswith("| met (<= 1.5x SGEMM); met (>= 10x faster than PyTorch) |")
    assert table[-3].endswith("| missed (<= 1.5x SGEMM) |")
    assert table[-2].endswith("| 0.5 |  |")  # N = 1024: no target applies
    assert table[-1].endswith("| missed (<= 0.5x sort) |") and "| 0.100 ms |" in table[-1]


class FakeCupyArray(np.ndarray):
    """A NumPy array posing as a CuPy array (device interface, .get())."""

    @property
    def __cuda_array_interface__(self):
        return dict(shape=self.shape, typestr=self.dtype.str, data=(self.ctypes.data, False), version=3)

    def get(self):
        return np.asarray(self).copy()


def fake_cupy():
    """The part of CuPy that benchmarks/gpu.py uses, on the host (events read the host clock)."""
    import time
    import types

    as_fake = lambda x: np.ascontiguousarray(x.get() if hasattr(x, "get") else x).view(FakeCupyArray)  # noqa: E731

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cuda = types.SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        Device=lambda: types.SimpleNamespace(synchronize=lambda: None),
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"stand-in"},
                                      runtimeGetVersion=lambda: 0))
    return types.SimpleNamespace(ndarray=FakeCupyArray, asarray=as_fake, ascontiguousarray=as_fake, cuda=cuda,
                                 matmul=lambda a, b: as_fake(np.matmul(a, b)),
                                 argsort=lambda x: as_fake(np.argsort(x.get())),
                                 get_default_memory_pool=lambda: types.SimpleNamespace(free_all_blocks=lambda: None))


def test_suite_runs_on_standins(tmp_path, monkeypatch):
    """The suite's own code (calls, ratios, table, files) on CPU stand-ins of CuPy and _core_cuda: no timing
    meaning, only that the code a GPU run depends on works."""
    sys.path.insert(0, str(REPO / "tests" / "gpu"))
    import cpu_standin

    import caffe_mining
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setitem(sys.modules, "caffe_mining._core_cuda", cpu_standin)
    monkeypatch.setattr(caffe_mining, "_core_cuda", cpu_standin, raising=False)
    args = parse_args(["run", "--device", "gpu", "--no-torch", "--gpu-hardnet-sizes", "64", "--gpu-contrastive-sizes",
                       "256", "--dim", "8", "--rounds", "2", "--warmup", "1", "--out", str(tmp_path)])
    assert gpu.run(args) == 0
    table = (tmp_path / "results_gpu.md").read_text()
    for impl in [gpu.SGEMM, gpu.SORT, *[f"HardNetLoss {mode} (fwd + bwd)" for mode in gpu.HARDNET_MODES],
                 "MiningContrastiveLoss r=4 (fwd + bwd)", "MiningContrastiveLoss r=1 (fwd)"]:
        assert f"| {impl} |" in table, impl
    rows = json.loads((tmp_path / "results_gpu.json").read_text())["rows"]
    hardnet_min = next(r for r in rows if r["impl"] == "HardNetLoss MIN (fwd + bwd)")
    expected = caffe_mining.hardnet_loss(*benchmarks_inputs().hardnet_batch(64, 8)).loss
    assert hardnet_min["loss"] == pytest.approx(expected, rel=1e-6) and hardnet_min["vs_sgemm"] > 0
    assert {r["dim"] for r in rows if r["suite"] == "contrastive"} == {8, 1}


def benchmarks_inputs():
    from benchmarks import inputs
    return inputs
