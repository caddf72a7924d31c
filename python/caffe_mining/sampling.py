"""The RANDOM batch_reduce's draws, reproduced bit for bit from the C++ HardNetLoss layer.

The layer seeds a std::mt19937 once at set-up with hardnet_loss_param.seed and, at every forward pass, draws N
32-bit outputs x_i in row order and uses u_i = (x_i >> 8) / 2^24 (24 bits: exact in float32 and below 1).
NumPy's legacy RandomState seeds the same Mersenne Twister the same way (init_genrand), so
``LayerUniforms(seed)`` gives the C++ layer's u_i, forward pass after forward pass.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["LayerUniforms"]


class LayerUniforms:
    """Stream of per-row uniforms in [0, 1) for RANDOM, as the C++ layer draws them.

    Args:
        seed: the layer's seed (0 <= seed < 2^32); None seeds from the OS (unreproducible, like a C++ layer
            without a seed, whose draws then come from Caffe's RNG).

    Example:
        >>> draws = LayerUniforms(5)
        >>> u = draws.next(3); u.shape, bool(np.all((0 <= u) & (u < 1)))
        ((3,), True)
        >>> bool(np.all(LayerUniforms(5).next(3) == u))
        True
    """

    def __init__(self, seed: Optional[int] = None) -> None:
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._state = np.random.RandomState(seed)

    def next(self, n: int) -> np.ndarray:
        """The next n draws, float64 (exactly representable in float32)."""
        raw = self._state._bit_generator.random_raw(n)  # the Mersenne Twister's 32-bit outputs
        return (np.asarray(raw, dtype=np.uint64) >> np.uint64(8)).astype(np.float64) / float(1 << 24)
