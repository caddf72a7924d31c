"""MiningContrastiveLoss's CUDA kernels' logic without a GPU (tests/emulation/contrastive_gpu_emulation.cpp; see
emulation_support)."""
import pytest

from emulation_support import SEEDS, emulator  # noqa: F401 (the fixture)


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
