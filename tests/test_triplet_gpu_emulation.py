"""TripletLoss's CUDA kernels' logic without a GPU (tests/emulation/triplet_gpu_emulation.cpp; see emulation_support)."""
import pytest

from emulation_support import SEEDS, emulator  # noqa: F401 (the fixture)


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
