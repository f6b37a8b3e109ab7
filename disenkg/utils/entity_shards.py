r"""Entity sharding: each of ``S`` ranks holds a contiguous slice of the entity table.

Rank ``s`` owns entities :math:`[\mathrm{lo}_s, \mathrm{hi}_s)`, by default
:math:`\mathrm{lo}_s = \lfloor sN/S \rfloor` (:func:`shard_bounds`), or ranges of equal
total weight (:func:`balanced_bounds`, e.g. a graph encoder's edges per receiver): its rows
of every per-entity parameter (the embedding table, the scoring bias) and their optimiser
state live on that rank only, and it scores every query of the batch against its own
candidates. The 1-N loss is a mean over all (query, entity) pairs, so it decomposes over
the shards exactly:

.. math::
    \mathcal L = \frac{1}{BN}\sum_b \sum_{n} \ell_{bn}
      = \sum_s \frac{1}{BN}\sum_b \sum_{n = \mathrm{lo}_s}^{\mathrm{hi}_s - 1} \ell_{bn},

each positive pair ``(b, n)`` is routed to the rank that owns ``n`` (the others see it as
absent from their slice), and label smoothing keeps the global :math:`1/N`. The query side
(the query network) is computed identically on every rank from the same batch and the same
dropout stream; its parameter gradients are summed over the ranks (each rank's contains its
slice's share of the loss), and the gradient of a looked-up row
(:meth:`EntityShard.lookup`) is summed over the ranks before it reaches the owner's rows. A
graph encoder is split by receiver: each shard computes its own entities' rows from the
sender rows it receives (:mod:`disenkg.utils.halo`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from disenkg.utils.distributed import gather_rows

__all__ = ["PARTITIONS", "EntityShard", "balanced_bounds", "shard_bounds"]

#: how the entity ids are cut into shards: ``range`` = equal numbers of entities,
#: ``degree`` = equal numbers of edges received (plus one self loop each)
PARTITIONS = ("range", "degree")


def shard_bounds(num_entities: int, num_shards: int) -> list[int]:
    """The ``S + 1`` boundaries ``lo_0 = 0 <= lo_1 <= ... <= lo_S = N`` (sizes differ by
    at most one)."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    if num_entities < num_shards:
        raise ValueError(f"cannot split {num_entities} entities into {num_shards} shards")
    return [s * num_entities // num_shards for s in range(num_shards + 1)]


def balanced_bounds(weights: Tensor, num_shards: int) -> list[int]:
    r"""Contiguous boundaries whose shards carry about equal total ``weights`` (``(N,)``,
    positive): :math:`\mathrm{lo}_s` puts the prefix sum nearest to :math:`s\,W/S` before
    it, every shard keeping at least one entity."""
    N = int(weights.numel())
    shard_bounds(N, num_shards)  # validates the sizes
    if N and float(weights.min()) <= 0:
        raise ValueError("balanced_bounds needs positive weights")
    csum = torch.cumsum(weights.double().flatten(), 0).tolist()
    total = csum[-1]
    bounds = [0]
    for s in range(1, num_shards):
        target = s * total / num_shards
        c = bisect.bisect_left(csum, target)  # csum[c] >= target: cut after c, or before
        cut = c + 1 if c == 0 or csum[c] - target < target - csum[c - 1] else c
        bounds.append(min(max(cut, bounds[-1] + 1), N - (num_shards - s)))
    return bounds + [N]


@dataclass(frozen=True)
class EntityShard:
    """This rank's slice of the entities: shard ``rank`` of ``num_shards``, exchanged
    within ``group`` (the process group of the ``num_shards`` ranks that share a batch
    slice; ``None`` = all ranks, then the world size must be ``num_shards``). ``bounds``
    (``S + 1`` increasing ids from 0 to ``N``) cuts the ids; default
    :func:`shard_bounds`."""

    rank: int
    num_shards: int
    num_entities: int
    group: Any = field(default=None, compare=False, repr=False)
    bounds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        even = shard_bounds(self.num_entities, self.num_shards)  # validates the sizes
        if not 0 <= self.rank < self.num_shards:
            raise ValueError(f"shard rank must lie in [0, {self.num_shards}), got {self.rank}")
        if self.bounds is None:
            object.__setattr__(self, "bounds", tuple(even))
        b = self.bounds
        if (len(b) != self.num_shards + 1 or b[0] != 0 or b[-1] != self.num_entities
                or any(x >= y for x, y in zip(b, b[1:]))):
            raise ValueError(f"shard bounds must rise strictly from 0 to {self.num_entities} "
                             f"in {self.num_shards + 1} steps, got {list(b)}")

    @property
    def lo(self) -> int:
        return self.bounds[self.rank]

    @property
    def hi(self) -> int:
        return self.bounds[self.rank + 1]

    def owner(self, ids: Tensor) -> Tensor:
        """The shard owning each global entity id."""
        edges = torch.tensor(self.bounds[1:-1], dtype=ids.dtype, device=ids.device)
        return torch.bucketize(ids, edges, right=True)

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
