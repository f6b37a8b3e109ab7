"""Collective helpers of ``torch.distributed`` used below the training layer (evaluation)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_rows"]


def gather_rows(x: Tensor, world_size: int) -> list[Tensor]:
    """Every rank's ``x`` (``(n_r, ...)``, ``n_r`` may differ), in rank order."""
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    top = max(sizes)
    pad = x.new_zeros((top, *x.shape[1:]))
    pad[:x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in range(world_size)]
    dist.all_gather(parts, pad)
    return [p[:s] for p, s in zip(parts, sizes)]
