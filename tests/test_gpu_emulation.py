"""The CUDA kernels' logic, checked without a GPU: tests/emulation/*.cpp run the kernels' per-element steps (the
host/device functions of caffe_mining/hardnet_gpu_steps.hpp and triplet_gpu_steps.hpp, the radix:: steps of
contrastive_mining.hpp) serially, in the order the kernels run them, against the CPU core, and count bit mismatches. A planted bug (an
ordering or rounding change) must show up as mismatches, so the comparison is known to bite.

What a GPU run adds on top (tests/gpu/): cuBLAS's dot products and the device's norms differ from cblas in the last
bits by design, so there the kernels are compared with the CPU on the same inputs with the tolerances of the header."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "hardnet_gpu_emulation": ["tests/emulation/hardnet_gpu_emulation.cpp", "caffe_layers/src/caffe/mining/hardnet.cpp",
                              "caffe_layers/src/caffe/mining/hardest_negative_row.cpp",
                              "caffe_layers/src/caffe/mining/gemm_distances.cpp",
                              "caffe_layers/src/caffe/mining/distance_gradients.cpp"],
    "contrastive_gpu_emulation": ["tests/emulation/contrastive_gpu_emulation.cpp",
                                  "caffe_layers/src/caffe/mining/contrastive_mining.cpp"],
    "margin_gpu_emulation": ["tests/emulation/margin_gpu_emulation.cpp", "caffe_layers/src/caffe/mining/margin.cpp"],
    "triplet_gpu_emulation": ["tests/emulation/triplet_gpu_emulation.cpp", "caffe_layers/src/caffe/mining/triplet.cpp",
                              "caffe_layers/src/caffe/mining/gemm_distances.cpp"],
}
SEEDS = [1, 2, 3]


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
                       *[str(ROOT / s) for s in SOURCES[name]], "-lopenblas", "-o", str(binary)]
            subprocess.run(command, check=True, capture_output=True, text=True)
            built[name] = binary
        result = subprocess.run([str(built[name]), *map(str, args)], check=True, capture_output=True, text=True)
        match = re.search(r"cases=(\d+) compared=(\d+) mismatches=(\d+)\s*$", result.stdout)
        assert match, result.stdout
        cases, compared, mismatches = map(int, match.groups())
        assert cases > 0 and compared > 0, result.stdout
        return mismatches, result.stdout

    return run


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("seed", SEEDS)
def test_hardnet_mining_kernels_decide_as_the_cpu(emulator, dtype, seed):
    """squared_min_rows_kernel (MIN, no swap) and mine_rows_kernel (every other reduction, swap tile), given the
    CPU's dot products or distances, pick the CPU's negative, count, swap flag and values bit for bit (ties,
    duplicates, labels, n around multiples of 32); AVERAGE row sums within rounding."""
    mismatches, out = emulator("hardnet_gpu_emulation", "forward", dtype, seed)
    assert mismatches == 0, out


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("seed", SEEDS)
def test_hardnet_backward_gather_sums_in_the_cpu_order(emulator, dtype, seed):
    """The atomic-free MIN/RANDOM backward (scatter keys, a warp per output row) reproduces hardnet_backward_cpu's
    gradients bit for bit, with hub negatives, anchor swap, empty rows and zero coefficients."""
    mismatches, out = emulator("hardnet_gpu_emulation", "backward", dtype, seed)
    assert mismatches == 0, out


@pytest.mark.parametrize("plant", ["order", "own_last", "fma"])
def test_hardnet_backward_comparison_catches_a_planted_bug(emulator, plant):
    """Summing a row's terms in another order, or letting the compiler fuse a product into the sum, changes bits."""
    mismatches, _ = emulator("hardnet_gpu_emulation", "backward", "float", 1, plant)
    assert mismatches > 0


@pytest.mark.parametrize("plant", ["last_tie", "tile_ij", "rank_up"])
def test_hardnet_mining_comparison_catches_a_planted_bug(emulator, plant):
    """The last instead of the first column among equal minima, a swap tile loaded untransposed, RANDOM one
    candidate off: each is seen."""
    mismatches, _ = emulator("hardnet_gpu_emulation", "forward", "float", 1, plant)
    assert mismatches > 0


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_hardnet_nonfinite_policy_steps(emulator, dtype):
    """The flag (non-finite norm, or a squared-distance bound that overflows), empty rows with pos_dist NaN, and a
    backward that is NaN everywhere."""
    mismatches, out = emulator("hardnet_gpu_emulation", "policy", dtype)
    assert mismatches == 0, out


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_contrastive_radix_select_picks_as_the_cpu(emulator, dtype, seed):
    """The device radix select (the kinds read from block-shared memory) picks the CPU's pairs, ties by index,
    n across the 1-, 2- and 3-byte index widths."""
    mismatches, out = emulator("contrastive_gpu_emulation", "select", dtype, seed)
    assert mismatches == 0, out


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_contrastive_backward_flag_protocol(emulator, dtype):
    """The backward keeps its non-finite flag in the workspace: finite batches give the CPU's gradients bit for bit
    (either buffer may be absent), a non-finite pair NaN everywhere."""
    mismatches, out = emulator("contrastive_gpu_emulation", "backward", dtype, 1)
    assert mismatches == 0, out


@pytest.mark.parametrize("check,plant", [("select", "index_order"), ("backward", "flag_ignored")])
def test_contrastive_comparison_catches_a_planted_bug(emulator, check, plant):
    mismatches, _ = emulator("contrastive_gpu_emulation", check, "float", 1, plant)
    assert mismatches > 0


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("seed", SEEDS)
def test_triplet_kernels_decide_as_the_cpu(emulator, dtype, seed):
    """distances_kernel (pairs from cuBLAS's lower triangle, mirrored), anchors_kernel (every mining, reverse
    anchor order), loss_kernel's tree and the backward's S and row sums, given the CPU's norms and dot products:
    D, weights, decisions and S bit for bit, the loss within rounding."""
    mismatches, out = emulator("triplet_gpu_emulation", dtype, seed)
    assert mismatches == 0, out


def test_triplet_comparison_catches_a_planted_bug(emulator):
    """The dot products where the CPU's SYRK leaves them (row-major upper) instead of cuBLAS's (lower)."""
    mismatches, _ = emulator("triplet_gpu_emulation", "float", 1, "upper_triangle")
    assert mismatches > 0


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("seed", SEEDS)
def test_margin_kernels_draw_and_differentiate_as_the_cpu(emulator, dtype, seed):
    """margin.cu's kernels, step by step (threads in reverse order): the same counts, offsets, triplets, distances,
    loss and gradients (embedding and beta) as the CPU core, bit for bit, with singletons, per-class beta, nu,
    UNIFORM, the cutoff disabled, duplicate rows and NaN input."""
    mismatches, out = emulator("margin_gpu_emulation", dtype, seed)
    assert mismatches == 0, out


@pytest.mark.parametrize("seed", SEEDS)
def test_margin_cpu_sse2_lanes_draw_and_differentiate_as_the_kernels(emulator, monkeypatch, seed):
    """The CPU's float distances in SSE2 lanes (CAFFE_MINING_CPU_LANES=sse2, read by the harness's margin.cpp): the
    same bits as the kernels' scalar steps, as the AVX2 lanes above."""
    monkeypatch.setenv("CAFFE_MINING_CPU_LANES", "sse2")
    mismatches, out = emulator("margin_gpu_emulation", "float", seed)
    assert mismatches == 0, out


@pytest.mark.parametrize("plant", ["order", "fma", "one_row"])
def test_margin_comparison_catches_a_planted_bug(emulator, plant):
    """A gradient summed in another order or with a fused multiply-add, or every anchor's weights kept in the
    CPU's single row while the draw kernel runs after all rows: each is seen."""
    mismatches, _ = emulator("margin_gpu_emulation", "float", 1, plant)
    assert mismatches > 0
