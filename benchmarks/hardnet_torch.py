"""The authors' PyTorch formulation of the HardNet loss (loss_HardNet, defaults), for comparison only.

Written from the paper (Mishchuk et al. 2017, eq. 1-2) and the structure of their public loss_HardNet /
distance_matrix_vector: the full distance matrix with eps inside the square root plus 1e-8 after it, the diagonal
and near-duplicates (distance < 0.008) pushed out of the row minimum by adding 10, the minimum over each row,
max(margin + pos - neg, 0) and its mean; autograd gives the backward pass. Defaults only: batch_reduce 'min',
loss_type 'triplet_margin', margin 1, no anchor swap.

torch is not a project dependency: ``python -m benchmarks setup-torch`` installs it into a folder of its own,
added to sys.path only by the benchmark (see ``import_torch``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

DUPLICATE_THRESHOLD = 0.008
PUSH = 10.0  # what the authors add to the entries that must not be a row's minimum


def torch_site() -> Path:
    """Folder that setup-torch installs torch into."""
    base = os.environ.get("CAFFE_MINING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "caffe-mining")
    return Path(base) / "bench-torch"


def import_torch(threads: int) -> Optional[object]:
    """torch (from the environment, else from torch_site()), limited to `threads` threads; None if absent."""
    try:
        import torch  # noqa: F401
    except ImportError:
        site = str(torch_site())
        if not os.path.isdir(site):
            return None
        sys.path.append(site)  # appended: the environment's own packages keep precedence
        try:
            import torch  # noqa: F811
        except ImportError:
            return None
    import torch

    torch.set_num_threads(threads)
    return torch


def distance_matrix(torch, anchor, positive, eps: float = 1e-6):
    """D_ij = sqrt(|a_i|^2 + |p_j|^2 - 2 a_i.p_j + eps), one matrix product."""
    sq_a = (anchor * anchor).sum(dim=1, keepdim=True)
    sq_p = (positive * positive).sum(dim=1, keepdim=True)
    return torch.sqrt(sq_a + sq_p.t() - 2.0 * anchor @ positive.t() + eps)


def hardnet_loss(torch, anchor, positive, margin: float = 1.0):
    """Mean over rows of max(margin + D_ii - min_{j valid} D_ij, 0), the authors' way."""
    dist = distance_matrix(torch, anchor, positive) + 1e-8
    eye = torch.eye(dist.size(1), dtype=dist.dtype, device=dist.device)
    pos = torch.diagonal(dist)
    pushed = dist + eye * PUSH
    duplicate = (pushed < DUPLICATE_THRESHOLD).to(dist.dtype)
    pushed = pushed + duplicate * PUSH
    min_neg = torch.min(pushed, dim=1)[0]
    return torch.clamp(margin + pos - min_neg, min=0.0).mean()


class TorchHardNet:
    """Forward and backward of hardnet_loss on fixed float32 inputs (leaf tensors, gradients cleared each call),
    on the CPU or on a CUDA device (the loss's value read back ends each call)."""

    def __init__(self, torch, anchor, positive, device: str = "cpu"):
        self.torch = torch
        self.anchor = torch.from_numpy(anchor).to(device).requires_grad_(True)
        self.positive = torch.from_numpy(positive).to(device).requires_grad_(True)

    def __call__(self) -> float:
        self.anchor.grad = None
        self.positive.grad = None
        loss = hardnet_loss(self.torch, self.anchor, self.positive)
        loss.backward()
        return float(loss.detach())
