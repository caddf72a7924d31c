"""MarginLoss's CUDA kernels' logic without a GPU (tests/emulation/margin_gpu_emulation.cpp; see emulation_support)."""
import pytest

from emulation_support import SEEDS, emulator  # noqa: F401 (the fixture)


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
