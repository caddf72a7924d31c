"""The CUDA path's own logic, run on the host without Caffe or a GPU: the contrastive radix select (the header's
radix:: steps, serially, as contrastive_mining.cu runs them) must pick exactly the pairs of the CPU core's
nth_element selection and of the NumPy reference, across index widths of 1, 2 and 3 bytes and with many ties; the
hardness key orders costs, merges -0 with +0 and ranks NaN hardest; HardNet's element distance (only the CUDA
path calls it) clamps a rounding-negative squared distance. tests/native/gpu_logic_on_host.cpp is compiled here
against this tree's headers."""
import ctypes
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import caffe_mining
from caffe_mining import reference

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests" / "native" / "gpu_logic_on_host.cpp"
CTYPES = {np.float32: (ctypes.c_float, "f32"), np.float64: (ctypes.c_double, "f64")}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    compiler = (sysconfig.get_config_var("CXX") or "c++").split()[0]
    if shutil.which(compiler) is None:
        compiler = "c++"
    library = tmp_path_factory.mktemp("native") / "gpu_logic_on_host.so"
    subprocess.run([compiler, "-std=c++17", "-O2", "-shared", "-fPIC", f"-I{REPO / 'caffe_layers' / 'include'}",
                    str(SOURCE), "-o", str(library)], check=True)
    lib = ctypes.CDLL(str(library))
    for dtype, (c_type, suffix) in CTYPES.items():
        getattr(lib, f"hardness_key_{suffix}").restype = ctypes.c_uint64
        getattr(lib, f"hardness_key_{suffix}").argtypes = [c_type]
        getattr(lib, f"hardnet_distance_{suffix}").restype = c_type
        getattr(lib, f"hardnet_distance_{suffix}").argtypes = [c_type] * 4
    return lib


def radix_picked(native, cost, sim, num_picked):
    dtype = cost.dtype.type
    cost = np.ascontiguousarray(cost)
    sim = np.ascontiguousarray(sim, dtype=dtype)
    picked = np.zeros(len(cost), np.int32)
    c_type = CTYPES[dtype][0]
    getattr(native, f"radix_pick_{CTYPES[dtype][1]}")(
        ctypes.c_int(len(cost)), cost.ctypes.data_as(ctypes.POINTER(c_type)), sim.ctypes.data_as(ctypes.POINTER(c_type)),
        ctypes.c_int(num_picked), picked.ctypes.data_as(ctypes.POINTER(ctypes.c_int)))
    return picked.astype(bool)


def tied_batch(rng, n, levels, variant, dtype):
    """Features on a coarse grid (many exactly equal costs); labels mixed, rare or of one kind."""
    a = (0.375 * rng.integers(0, levels, size=(n, 2))).astype(dtype)
    b = (0.375 * rng.integers(0, levels, size=(n, 2))).astype(dtype)
    if variant < 3:
        sim = rng.integers(0, 2, size=n)
    else:
        sim = (np.arange(n) % 17 == 3) | (variant == 5)
    return a, b, sim.astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 255, 256, 257, 1000, 65536, 65537])
def test_radix_select_picks_what_the_cpu_core_picks(native, dtype, n):
    rng = np.random.default_rng(n)
    for variant in range(6):
        a, b, sim = tied_batch(rng, n, 2 + variant, variant, dtype)
        ratio = 1 + variant
        core = caffe_mining.mining_contrastive_loss(a, b, sim, legacy_version=bool(variant % 2), mining_ratio=ratio,
                                                    backward=False)
        picked = radix_picked(native, core.cost, sim, n // ratio)
        assert picked.sum() == n // ratio
        assert picked.tolist() == core.picked.tolist(), f"n = {n}, variant {variant}"
        if n <= 1000:
            ref = reference.mining_contrastive_loss(a.astype(np.float64), b.astype(np.float64), sim,
                                                    legacy_version=bool(variant % 2), mining_ratio=ratio)
            assert picked.tolist() == ref.picked.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_select_every_k_with_ties_across_index_bytes(native, dtype):
    """All costs equal but a few: every K from 0 to n, on both sides of 256 (the index's second byte)."""
    for n in (255, 256, 257, 300):
        cost = np.full(n, 0.5, dtype)
        cost[[3, n - 1]] = 2.0  # two hardest, one at the last index
        cost[7] = 0.0
        sim = np.ones(n)
        sim[::3] = 0
        for k in range(n + 1):
            picked = radix_picked(native, cost, sim, k)
            ks = min((k + 1) // 2, int(sim.sum()))
            kd = min(k - ks, n - int(sim.sum()))
            ks = k - kd
            expected = np.zeros(n, bool)
            for kind, count in ((1, ks), (0, kd)):
                members = np.flatnonzero(sim == kind)
                order = sorted(members, key=lambda i: (-cost[i], i))
                expected[order[:count]] = True
            assert picked.tolist() == expected.tolist(), f"n = {n}, K = {k}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_select_ranks_nan_hardest(native, dtype):
    cost = np.array([0.5, np.nan, 3.0, 0.0, np.inf, 1.0], dtype)
    sim = np.ones(6)
    assert np.flatnonzero(radix_picked(native, cost, sim, 1)).tolist() == [1]  # NaN before +inf (lower index)
    assert np.flatnonzero(radix_picked(native, cost, sim, 2)).tolist() == [1, 4]
    assert np.flatnonzero(radix_picked(native, cost, sim, 3)).tolist() == [1, 2, 4]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hardness_key_orders_costs(native, dtype):
    key = getattr(native, f"hardness_key_{CTYPES[dtype][1]}")
    info = np.finfo(dtype)
    values = [0.0, float(info.tiny) / 4, float(info.tiny), 1e-30, 0.25, 0.5, 1.0, 2.0, float(info.max)]
    keys = [key(v) for v in values]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert key(-0.0) == key(0.0) == 0
    assert key(float("nan")) == key(float("inf")) > key(float(info.max))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hardnet_distance_is_clamped_before_eps(native, dtype):
    distance = getattr(native, f"hardnet_distance_{CTYPES[dtype][1]}")
    eps = 1e-6
    assert distance(1.0, 1.0, 1.0 + 1e-3, eps) == pytest.approx(np.sqrt(dtype(eps)), rel=1e-6)  # sq < 0: clamped
    assert distance(1.0, 2.25, 0.0, eps) == pytest.approx(np.sqrt(3.25 + eps), rel=1e-6)
    assert distance(0.0, 1.0, 0.0, 0.5625) == 1.25  # exact: sqrt(1 + 9/16)
