"""Collective helpers of ``torch.distributed`` used below the training layer (evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum", "batch_stats_synced", "gather_rows", "sync_batch_stats",
           "sync_group"]


def gather_rows(x: Tensor, world_size: int, group=None) -> list[Tensor]:
    """Every rank's ``x`` (``(n_r, ...)``, ``n_r`` may differ), in rank order (of
    ``group``, by default all ranks)."""
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s) for s in sizes]
    top = max(sizes)
    pad = x.new_zeros((top, *x.shape[1:]))
    pad[:x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in range(world_size)]
    dist.all_gather(parts, pad, group=group)
    return [p[:s] for p, s in zip(parts, sizes)]


#: whether batch statistics are summed over ranks, and over which process group
#: (set by the data-parallel trainer around each training step; see :func:`sync_batch_stats`)
_SYNC_BATCH_STATS = False
_SYNC_GROUP = None


@contextmanager
def sync_batch_stats(enabled: bool = True, group=None) -> Iterator[None]:
    """Within the block, the batch norms of the conv scorers (and their head's patch
    moments) normalise over the whole global batch, summed over the ranks of ``group``
    (default: all ranks; with entity shards, the ranks holding the distinct batch slices),
    so that a data-parallel step equals one process (what ``SyncBatchNorm`` does on GPUs;
    this one also runs on CPUs with ``gloo``)."""
    global _SYNC_BATCH_STATS, _SYNC_GROUP
    old = _SYNC_BATCH_STATS, _SYNC_GROUP
    _SYNC_BATCH_STATS = bool(enabled) and dist.is_available() and dist.is_initialized()
    _SYNC_GROUP = group
    try:
        yield
    finally:
        _SYNC_BATCH_STATS, _SYNC_GROUP = old


def batch_stats_synced() -> bool:
    """Whether :func:`sync_batch_stats` is active."""
    return _SYNC_BATCH_STATS


def sync_group():
    """The process group of :func:`sync_batch_stats` (``None``: all ranks)."""
    return _SYNC_GROUP


def all_reduce_sum(x: Tensor) -> Tensor:
    """``x`` summed over the ranks of :func:`sync_batch_stats`' group, in place;
    returns ``x``."""
    dist.all_reduce(x, group=_SYNC_GROUP)
    return x
