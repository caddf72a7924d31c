"""Every implementation the benchmark compares, as a factory of runners.

A factory allocates what the implementation keeps between iterations (buffers, a Caffe net) and returns a runner;
calling the runner does one forward + backward pass on the fixed inputs and returns the loss (None for the SGEMM
floor, which computes no loss). ``runner.io_bytes()`` is the size of the inputs and outputs the implementation holds
in its own memory (a Caffe net's input blobs and their diffs, returned gradients): the memory probe subtracts it to
get the extra memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from benchmarks import caffe_nets, hardnet_torch, native
from benchmarks.inputs import contrastive_batch, hardnet_batch

MARGIN = 1.0


@dataclass
class Context:
    """The optional parts, loaded once: the native helpers (always), pycaffe and torch (None when absent)."""

    lib: object
    caffe: Optional[object]
    torch: Optional[object]

    @classmethod
    def load(cls, threads: int, with_caffe: bool = True, with_torch: bool = True) -> "Context":
        return cls(native.load(), caffe_nets.import_caffe() if with_caffe else None,
                   hardnet_torch.import_torch(threads) if with_torch else None)


class Runner:
    def __call__(self) -> Optional[float]:
        raise NotImplementedError

    def io_bytes(self) -> int:
        raise NotImplementedError


def _result_bytes(result) -> int:
    return sum(field.nbytes for field in result if isinstance(field, np.ndarray))


# ---------------------------------------------------------------------------------------------------------------
# HardNetLoss

class SgemmFloor(Runner):
    """One cblas_sgemm of N x N x D (anchor * positive^T) on the OpenBLAS the core links."""

    def __init__(self, lib, anchor, positive):
        self.lib, self.anchor, self.positive = lib, anchor, positive
        self.out = np.empty((len(anchor), len(anchor)), np.float32)

    def __call__(self):
        n, dim = self.anchor.shape
        self.lib.bench_sgemm_abt(n, dim, self.anchor, self.positive, self.out)
        return None

    def io_bytes(self):
        return self.out.nbytes


@dataclass(frozen=True)
class HardNetConfig:
    """A mining configuration of HardNetLoss (TRIPLET_MARGIN, margin 1 throughout)."""

    batch_reduce: str = "MIN"
    anchor_swap: bool = False

    @property
    def label(self) -> str:
        return self.batch_reduce + (" + anchor_swap" if self.anchor_swap else "")

    def uniforms(self, n: int) -> Optional[np.ndarray]:
        """RANDOM's uniforms of the layer's first forward pass (hardnet_loss_param.seed = RANDOM_SEED)."""
        import caffe_mining

        return caffe_mining.LayerUniforms(RANDOM_SEED).next(n) if self.batch_reduce == "RANDOM" else None


# The core's HardNetBatchReduce values (caffe_mining/hardnet.hpp).
BATCH_REDUCE_CODES = {"MIN": 0, "AVERAGE": 1, "RANDOM": 2}
RANDOM_SEED = 1
DEFAULT_CONFIG = HardNetConfig()
# Every configuration the layer is trained with (issue 14): MIN, RANDOM and AVERAGE, each with and without swap.
HARDNET_CONFIGS: Tuple[HardNetConfig, ...] = tuple(HardNetConfig(reduce, swap)
                                                   for reduce in ("MIN", "RANDOM", "AVERAGE")
                                                   for swap in (False, True))


class NativeHardNet(Runner):
    """The core's hardnet_forward_cpu + hardnet_backward_cpu, buffers allocated once."""

    def __init__(self, lib, anchor, positive, config: HardNetConfig = DEFAULT_CONFIG):
        self.lib, self.anchor, self.positive = lib, anchor, positive
        self.handle = native.NativeHandle(lib, "hardnet", len(anchor), int(config.anchor_swap),
                                          BATCH_REDUCE_CODES[config.batch_reduce])
        uniforms = config.uniforms(len(anchor))
        self.uniforms = np.zeros(len(anchor), np.float32) if uniforms is None else uniforms.astype(np.float32)
        self.grad_a = np.empty_like(anchor)
        self.grad_p = np.empty_like(positive)

    def __call__(self):
        return float(self.lib.bench_hardnet_forward_backward(self.handle.pointer, self.anchor.shape[1], self.anchor,
                                                             self.positive, self.uniforms, self.grad_a, self.grad_p))

    def io_bytes(self):
        return self.grad_a.nbytes + self.grad_p.nbytes


class FunctionRunner(Runner):
    """A function returning a result tuple whose first field is the loss (the bindings, the NumPy reference)."""

    def __init__(self, function: Callable[[], tuple]):
        self.function = function
        self.last_bytes = 0

    def __call__(self):
        result = self.function()
        self.last_bytes = _result_bytes(result)
        return float(result[0])

    def io_bytes(self):
        return self.last_bytes


class CaffeRunner(Runner):
    def __init__(self, loss: caffe_nets.CaffeLoss):
        self.loss = loss

    def __call__(self):
        return self.loss()

    def io_bytes(self):
        return sum(blob.data.nbytes + blob.diff.nbytes for blob in self.loss.net.blobs.values())


class TorchRunner(Runner):
    def __init__(self, torch, anchor, positive):
        self.run = hardnet_torch.TorchHardNet(torch, anchor, positive)  # inputs shared with NumPy, not copied

    def __call__(self):
        return self.run()

    def io_bytes(self):
        return sum(t.grad.numel() * t.grad.element_size() for t in (self.run.anchor, self.run.positive)
                   if t.grad is not None)


HARDNET_FLOOR = "SGEMM N×N×D (floor)"
HARDNET_CAFFE = "HardNetLoss layer (pycaffe)"
HARDNET_TORCH = "PyTorch loss_HardNet"


def hardnet_factories(ctx: Context, n: int, dim: int, with_reference: bool = True) -> Dict[str, Callable[[], Runner]]:
    """Name -> factory for HardNetLoss fwd+bwd at batch n (defaults: MIN, TRIPLET_MARGIN, margin 1)."""
    import caffe_mining

    anchor, positive = hardnet_batch(n, dim)
    factories: Dict[str, Callable[[], Runner]] = {
        HARDNET_FLOOR: lambda: SgemmFloor(ctx.lib, anchor, positive),
        "core (C++, buffers reused)": lambda: NativeHardNet(ctx.lib, anchor, positive),
        "core via bindings": lambda: FunctionRunner(lambda: caffe_mining.hardnet_loss(anchor, positive)),
    }
    if ctx.caffe is not None:
        factories[HARDNET_CAFFE] = lambda: CaffeRunner(caffe_nets.hardnet(ctx.caffe, anchor, positive))
    if ctx.torch is not None:
        factories[HARDNET_TORCH] = lambda: TorchRunner(ctx.torch, anchor, positive)
    if with_reference:
        factories["NumPy reference (float64)"] = lambda: FunctionRunner(
            lambda: caffe_mining.reference.hardnet_loss(anchor, positive))
    return factories


def config_core_name(config: HardNetConfig) -> str:
    return f"core (C++, buffers reused), {config.label}"


def config_layer_name(config: HardNetConfig) -> str:
    return f"HardNetLoss layer (pycaffe), {config.label}"


def hardnet_config_factories(ctx: Context, n: int, dim: int,
                             configs=HARDNET_CONFIGS) -> Dict[str, Callable[[], Runner]]:
    """Name -> factory for every configuration at batch n: the SGEMM floor, then per configuration the core with
    its buffers reused and (with pycaffe) the layer."""
    anchor, positive = hardnet_batch(n, dim)
    factories: Dict[str, Callable[[], Runner]] = {HARDNET_FLOOR: lambda: SgemmFloor(ctx.lib, anchor, positive)}
    for config in configs:
        factories[config_core_name(config)] = lambda c=config: NativeHardNet(ctx.lib, anchor, positive, c)
        if ctx.caffe is not None:
            factories[config_layer_name(config)] = lambda c=config: CaffeRunner(caffe_nets.hardnet(
                ctx.caffe, anchor, positive, batch_reduce=c.batch_reduce, anchor_swap=c.anchor_swap,
                seed=RANDOM_SEED))
    return factories


def hardnet_config_reference_loss(n: int, dim: int, config: HardNetConfig) -> float:
    """The NumPy reference's loss on the benchmark's batch for one configuration (RANDOM: the layer's first
    uniforms, which the core is given too)."""
    import caffe_mining

    anchor, positive = hardnet_batch(n, dim)
    return float(caffe_mining.reference.hardnet_loss(anchor, positive, anchor_swap=config.anchor_swap,
                                                     batch_reduce=config.batch_reduce,
                                                     uniforms=config.uniforms(n), backward=False).loss)


# ---------------------------------------------------------------------------------------------------------------
# MiningContrastiveLoss

class NativeContrastive(Runner):
    """The core's contrastive forward + backward (kind "contrastive") or the multimap baseline (kind "multimap")."""

    def __init__(self, lib, kind, feat, feat_p, sim, mining_ratio):
        self.feat, self.feat_p, self.sim, self.mining_ratio = feat, feat_p, sim, mining_ratio
        self.handle = native.NativeHandle(lib, kind, *feat.shape)
        self.run = getattr(lib, f"bench_{kind}_forward_backward")
        self.grad_a = np.empty_like(feat)
        self.grad_b = np.empty_like(feat_p)

    def __call__(self):
        return float(self.run(self.handle.pointer, self.feat, self.feat_p, self.sim, MARGIN, self.mining_ratio,
                              self.grad_a, self.grad_b))

    def io_bytes(self):
        return self.grad_a.nbytes + self.grad_b.nbytes


CONTRASTIVE_CAFFE = "ContrastiveLoss layer (pycaffe, no mining)"


def mining_layer_name(ratio: int) -> str:
    return f"MiningContrastiveLoss layer r={ratio} (pycaffe)"


def mining_core_name(ratio: int) -> str:
    return f"core (C++, nth_element) r={ratio}"


def multimap_name(ratio: int) -> str:
    return f"sorted multimaps (C++, seed 000) r={ratio}"


def contrastive_factories(ctx: Context, n: int, dim: int, ratios=(1, 2, 4)) -> Dict[str, Callable[[], Runner]]:
    """Name -> factory for contrastive fwd+bwd at n pairs: Caffe's layer, then per ratio ours and the baseline."""
    feat, feat_p, sim = contrastive_batch(n, dim)
    factories: Dict[str, Callable[[], Runner]] = {}
    if ctx.caffe is not None:
        factories[CONTRASTIVE_CAFFE] = lambda: CaffeRunner(caffe_nets.contrastive(ctx.caffe, feat, feat_p, sim))
    for ratio in ratios:
        if ctx.caffe is not None:
            factories[mining_layer_name(ratio)] = lambda r=ratio: CaffeRunner(
                caffe_nets.contrastive(ctx.caffe, feat, feat_p, sim, mining_ratio=r))
        factories[mining_core_name(ratio)] = lambda r=ratio: NativeContrastive(
            ctx.lib, "contrastive", feat, feat_p, sim, r)
        factories[multimap_name(ratio)] = lambda r=ratio: NativeContrastive(ctx.lib, "multimap", feat, feat_p, sim, r)
    return factories


def contrastive_reference_loss(n: int, dim: int, ratio: int) -> float:
    """The NumPy reference's loss on the benchmark's batch (float64), for the agreement check."""
    import caffe_mining

    feat, feat_p, sim = contrastive_batch(n, dim)
    return float(caffe_mining.reference.mining_contrastive_loss(feat, feat_p, sim, mining_ratio=ratio,
                                                                backward=False).loss)
