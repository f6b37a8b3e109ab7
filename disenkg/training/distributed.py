r"""Data-parallel link-prediction training over ``torch.distributed`` (``torchrun``).

Each of the ``P`` ranks holds the whole model and runs the graph encoder on the whole
graph; a global batch of ``B`` queries (the same shuffled order on every rank) is split
into disjoint slices ``ids[r::P]``. Rank ``r``'s loss is its slice's mean scaled by
``B_r / B``, so the sum over ranks of the scaled losses, and of their gradients, is the
global batch's mean loss and gradient:

.. math::
    \mathcal L = \frac1{B N}\sum_{b \le B}\sum_n \ell_{bn}
      = \sum_r \frac{B_r}{B}\,\frac1{B_r N}\sum_{b \in r}\sum_n \ell_{bn}.

Gradients are summed with one all-reduce of the flattened gradient buffer per optimiser
(the main one, and the MI estimator's own, which stays in sync the same way), so the
batch size and learning rate mean what they mean in one process. Dropout streams differ
per rank and are reseeded from ``(seed, rank, epoch)`` at every epoch, so a resumed run
continues them exactly. The conv scorers' batch norms (and their head's patch moments)
normalise over the whole global batch inside the step
(:func:`~disenkg.utils.distributed.sync_batch_stats`, :mod:`disenkg.ops.sync_batch_norm`),
so without dropout a data-parallel step equals a one-process step to float rounding. (A
last batch smaller than the number of ranks gives the empty ranks one zero-weighted query,
whose images do enter those statistics.)

Entity sharding (:mod:`disenkg.utils.entity_shards`) combines with this: ``P = D x S``
ranks form ``D`` data-parallel slices of ``S`` entity shards each (:func:`make_layout`);
rank ``r`` takes batch slice ``r // S`` and entity shard ``r % S``.

Backend ``nccl`` on GPUs, ``gloo`` on CPUs; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from disenkg.utils.distributed import gather_rows
from disenkg.utils.entity_shards import EntityShard

__all__ = ["DistContext", "Layout", "all_reduce_grads", "broadcast_module", "gather_rows",
           "init_from_env", "make_layout", "sum_scalar"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its
    machine."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, ids: Tensor) -> Tensor:
        """This rank's disjoint slice ``ids[rank::world_size]`` of a global batch."""
        return ids[self.rank::self.world_size]

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """The seed of this rank's dropout stream in ``epoch`` (0-based)."""
        return (seed * 1_000_003 + self.rank * 7_919 + epoch) % (2**63 - 1)


@dataclass(frozen=True)
class Layout:
    """How a job of ``P = D x S`` ranks splits the work.

    ``data`` is this rank's place among the ``D`` batch slices (its ``rank`` is the slice,
    ``world_size`` is ``D``; dropout streams are seeded from it, so the ``S`` ranks of one
    slice draw the same masks); ``shard`` its entity shard (``None`` without sharding);
    ``data_group`` the process group of the ``D`` ranks holding the same shard (``None``
    when that is every rank).
    """

    data: DistContext
    shard: EntityShard | None = None
    data_group: Any = field(default=None, compare=False, repr=False)


def make_layout(ctx: DistContext, entity_shards: int, num_entities: int,
                bounds: list[int] | None = None) -> Layout:
    """The layout of ``ctx``'s job with ``entity_shards`` shards (which must divide the
    world size; every rank must call this, in the same order as its other collectives),
    the entity ids cut at ``bounds`` (default: equal ranges).

    Raises:
        ValueError: the world size is not a multiple of ``entity_shards``.
    """
    P, S = ctx.world_size, entity_shards
    if S == 1:
        return Layout(data=ctx)
    if P % S:
        raise ValueError(f"{S} entity shards need a number of processes divisible by {S} "
                         f"(data-parallel slices x shards), this job has {P}")
    D = P // S
    d, s = divmod(ctx.rank, S)
    shard_group = data_group = None
    if D > 1:  # every rank creates every group, in the same order
        for i in range(D):
            g = dist.new_group(list(range(i * S, (i + 1) * S)))
            if i == d:
                shard_group = g
        for j in range(S):
            g = dist.new_group(list(range(j, P, S)))
            if j == s:
                data_group = g
    shard = EntityShard(rank=s, num_shards=S, num_entities=num_entities, group=shard_group,
                        bounds=None if bounds is None else tuple(bounds))
    return Layout(data=DistContext(rank=d, world_size=D, local_rank=ctx.local_rank),
                  shard=shard, data_group=data_group)


def init_from_env(device: torch.device) -> DistContext | None:
    """Joins the job ``torchrun`` described in the environment (``WORLD_SIZE`` > 1), with
    ``nccl`` on CUDA and ``gloo`` otherwise; ``None`` in a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    logger.info("rank %d of %d (local %d), backend %s", rank, world, local,
                dist.get_backend())
    return DistContext(rank=rank, world_size=world, local_rank=local)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` from rank ``src`` (identical start)."""
    for t in module.state_dict().values():
        if isinstance(t, Tensor):
            dist.broadcast(t, src)


def all_reduce_grads(params: list[nn.Parameter], group: Any = None) -> None:
    """Sums the gradients of ``params`` over the ranks of ``group`` (default: all), with
    one all-reduce of a flat buffer. A parameter without a gradient keeps none (every rank
    runs the same computation, so the same parameters have gradients everywhere)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def sum_scalar(x: Tensor) -> Tensor:
    """``x`` summed over all ranks (a new tensor)."""
    y = x.detach().clone()
    dist.all_reduce(y)
    return y
