"""HardNetLoss's CUDA kernels' logic without a GPU (tests/emulation/hardnet_gpu_emulation.cpp; see emulation_support)."""
import pytest

from emulation_support import SEEDS, emulator  # noqa: F401 (the fixture)


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
