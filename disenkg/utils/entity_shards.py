r"""Entity sharding: each of ``S`` ranks holds a contiguous slice of the entity table.

Rank ``s`` owns entities :math:`[\mathrm{lo}_s, \mathrm{hi}_s)` with
:math:`\mathrm{lo}_s = \lfloor sN/S \rfloor`: its rows of every per-entity parameter (the
embedding table, the scoring bias) and their optimiser state live on that rank only, and it
scores every query of the batch against its own candidates. The 1-N loss is a mean over
all (query, entity) pairs, so it decomposes over the shards exactly:

.. math::
    \mathcal L = \frac{1}{BN}\sum_b \sum_{n} \ell_{bn}
      = \sum_s \frac{1}{BN}\sum_b \sum_{n = \mathrm{lo}_s}^{\mathrm{hi}_s - 1} \ell_{bn},

each positive pair ``(b, n)`` is routed to the rank that owns ``n`` (the others see it as
absent from their slice), and label smoothing keeps the global :math:`1/N`. The query side
(the encoder, the query network) is computed identically on every rank from the same
batch and the same dropout stream; its parameter gradients are summed over the ranks
(each rank's contains its slice's share of the loss), and the gradient of a gathered
table (:meth:`EntityShard.gather`) or a looked-up row (:meth:`EntityShard.lookup`) is
summed over the ranks before it reaches the owner's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from disenkg.utils.distributed import gather_rows

__all__ = ["EntityShard", "shard_bounds"]


def shard_bounds(num_entities: int, num_shards: int) -> list[int]:
    """The ``S + 1`` boundaries ``lo_0 = 0 <= lo_1 <= ... <= lo_S = N`` (sizes differ by
    at most one)."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    if num_entities < num_shards:
        raise ValueError(f"cannot split {num_entities} entities into {num_shards} shards")
    return [s * num_entities // num_shards for s in range(num_shards + 1)]


@dataclass(frozen=True)
class EntityShard:
    """This rank's slice of the entities: shard ``rank`` of ``num_shards``, exchanged
    within ``group`` (the process group of the ``num_shards`` ranks that share a batch
    slice; ``None`` = all ranks, then the world size must be ``num_shards``)."""

    rank: int
    num_shards: int
    num_entities: int
    group: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        shard_bounds(self.num_entities, self.num_shards)  # validates the sizes
        if not 0 <= self.rank < self.num_shards:
            raise ValueError(f"shard rank must lie in [0, {self.num_shards}), got {self.rank}")

    @property
    def lo(self) -> int:
        return self.rank * self.num_entities // self.num_shards

    @property
    def hi(self) -> int:
        return (self.rank + 1) * self.num_entities // self.num_shards

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def slice(self, full: Tensor) -> Tensor:
        """This rank's rows of a full ``(N, ...)`` tensor (a copy)."""
        if full.shape[0] != self.num_entities:
            raise ValueError(f"expected {self.num_entities} rows to shard, got "
                             f"{full.shape[0]}")
        return full[self.lo:self.hi].clone()

    def local_pairs(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """The positive pairs ``(b, n)`` whose entity this rank owns, ``n`` made local."""
        mine = (cols >= self.lo) & (cols < self.hi)
        return rows[mine], cols[mine] - self.lo

    # ------------------------------------------------------------------ collectives
    def gather(self, local: Tensor) -> Tensor:
        """The full ``(N, ...)`` tensor from every rank's rows (autograd: the gradient of
        each rank's rows is the sum over ranks of the full gradient's rows)."""
        return _GatherRows.apply(local, self)

    def lookup(self, local: Tensor, ids: Tensor) -> Tensor:
        """Rows ``ids`` (global entity ids) of the sharded table ``local`` on every rank:
        each rank contributes the rows it owns and the contributions are summed (autograd:
        the gradient is summed the same way, so it reaches the owner whole). The gradient
        of a 2-D ``local`` is sparse (the looked-up rows only): a parameter that gets no
        dense gradient as well ends up with a sparse ``.grad``."""
        mine = (ids >= self.lo) & (ids < self.hi)
        where = torch.where(mine, ids - self.lo, torch.zeros_like(ids))
        # 2-D tables: a sparse gradient for the looked-up rows (no table-sized buffer)
        rows = (torch.nn.functional.embedding(where, local, sparse=True) if local.dim() == 2
                else local.index_select(0, where))
        rows = rows * mine.to(local.dtype).view(-1, *[1] * (local.dim() - 1))
        return _SumOverRanks.apply(rows, self.group)

    @torch.no_grad()
    def gather_full(self, local: Tensor) -> Tensor:
        """The full tensor (no autograd), e.g. to save a checkpoint."""
        return torch.cat(gather_rows(local.contiguous(), self.num_shards, self.group))

    def all_reduce(self, x: Tensor) -> Tensor:
        """``x`` summed over the shards, in place; returns ``x``."""
        dist.all_reduce(x, group=self.group)
        return x


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: Tensor, shard: EntityShard) -> Tensor:
        ctx.shard = shard
        return torch.cat(gather_rows(local.contiguous(), shard.num_shards, shard.group))

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.shard.group)
        return grad[ctx.shard.lo:ctx.shard.hi], None


class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        y = x.contiguous().clone()
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None
