r"""The halo of an entity shard: the sender rows its receivers' edges need from other shards.

A message-passing layer partitioned by receiver runs, on the rank of shard ``s``, the edges
:math:`j \to i` with :math:`i \in [\mathrm{lo}_s, \mathrm{hi}_s)`. Their receivers' rows are
local; their senders are local or owned by other shards. :meth:`Halo.build` (collective,
once per graph) numbers the rows a layer reads on this rank as

.. math::
    \underbrace{x_{\mathrm{lo}_s}, \dots, x_{\mathrm{hi}_s - 1}}_{\text{own rows}},\;
    \underbrace{x_{h_1}, \dots, x_{h_H}}_{\text{halo, by owner, ascending}}

and rewrites the local edges into that numbering (receivers in ``[0, hi - lo)``, senders in
``[0, hi - lo + H)``). :meth:`Halo.extend` makes the table each step: one
``all_to_all`` of exactly the rows each owner's neighbours need (uneven splits; ``gloo``
on CPUs, ``nccl`` on GPUs). Its backward is the reverse ``all_to_all``: the gradient of
every halo row goes back to its owner, which adds it to the gradient of its own row,

.. math::
    \partial x_n = \partial x_n^{\text{local}} + \sum_{s' \ne s}
        \partial x^{(s')}_{\text{halo row of } n}.

All-to-all rather than an all-gather of the whole table: a rank receives only its ``H``
rows (an all-gather would deliver all ``N`` rows, and hold them, on every rank); each
row crosses the network once per neighbouring shard that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from disenkg.utils.entity_shards import EntityShard

__all__ = ["Halo"]


@dataclass(frozen=True)
class Halo:
    """Shard ``shard``'s local edges and the row exchange they need (see module docstring).

    ``edge_index`` ``(2, E_s)``: row 0 the sender in the local numbering, row 1 the local
    receiver; ``edge_type`` ``(E_s,)``; ``ids`` ``(H,)`` the halo rows' global ids;
    ``recv_counts`` / ``send_counts`` the rows received from / sent to each shard;
    ``send_rows`` the local rows sent, grouped by destination shard."""

    shard: EntityShard
    edge_index: Tensor
    edge_type: Tensor
    ids: Tensor
    recv_counts: tuple[int, ...]
    send_rows: Tensor
    send_counts: tuple[int, ...]

    @classmethod
    def build(cls, shard: EntityShard, edge_index: Tensor, edge_type: Tensor) -> Halo:
        """From the whole graph's edges (``(2, E)``, row 0 sender, row 1 receiver, global
        ids); a collective call on the ranks of ``shard.group``."""
        local_index, local_type, ids, recv = cls.plan(shard, edge_index, edge_type)
        send = torch.empty_like(recv)
        dist.all_to_all_single(send, recv, group=shard.group)  # rows each shard asks of me
        wanted = ids.new_empty(int(send.sum()))
        dist.all_to_all_single(wanted, ids, send.tolist(), recv.tolist(), group=shard.group)
        return cls(shard=shard, edge_index=local_index, edge_type=local_type, ids=ids,
                   recv_counts=tuple(recv.tolist()), send_rows=wanted - shard.lo,
                   send_counts=tuple(send.tolist()))

    @staticmethod
    def plan(shard: EntityShard, edge_index: Tensor, edge_type: Tensor
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """This shard's side alone (no communication): its edges in the local numbering,
        their types, the halo's global ids and how many of them each shard owns."""
        src, dst = edge_index.long()
        mine = (dst >= shard.lo) & (dst < shard.hi)
        src, dst, rel = src[mine], dst[mine] - shard.lo, edge_type[mine]
        outside = (src < shard.lo) | (src >= shard.hi)
        ids = torch.unique(src[outside])  # sorted: grouped by owner (contiguous ranges)
        local_src = src - shard.lo
        local_src[outside] = shard.size + torch.searchsorted(ids, src[outside])
        recv = torch.bincount(shard.owner(ids), minlength=shard.num_shards)
        return torch.stack([local_src, dst]), rel, ids, recv

    @property
    def size(self) -> int:
        """H: the rows received from other shards per exchange."""
        return int(self.ids.numel())

    @property
    def rows_sent(self) -> int:
        return int(self.send_rows.numel())

    def to(self, device: torch.device | str) -> Halo:
        move = {k: getattr(self, k).to(device)
                for k in ("edge_index", "edge_type", "ids", "send_rows")}
        return Halo(shard=self.shard, recv_counts=self.recv_counts,
                    send_counts=self.send_counts, **move)

    def extend(self, x: Tensor, *, tanh: bool = False) -> Tensor:
        """``(hi - lo + H, ...)``: this shard's rows ``x`` (``tanh(x)`` with ``tanh``)
        followed by its halo rows (a collective call; autograd sends the halo rows'
        gradients back to their owners). The rows are written into the returned table
        directly: with ``tanh``, the activation's output is not held a second time."""
        if x.shape[0] != self.shard.size:
            raise ValueError(f"expected this shard's {self.shard.size} rows, got {x.shape[0]}")
        return _Extend.apply(x, self, tanh)


class _Extend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, halo: Halo, tanh: bool) -> Tensor:
        n = halo.shard.size
        table = x.new_empty(n + halo.size, *x.shape[1:])
        own = table[:n]
        if tanh:
            torch.tanh(x, out=own)
        else:
            own.copy_(x)
        dist.all_to_all_single(table[n:], own.index_select(0, halo.send_rows),
                               list(halo.recv_counts), list(halo.send_counts),
                               group=halo.shard.group)
        ctx.halo, ctx.tanh = halo, tanh
        if tanh:
            ctx.save_for_backward(table)
        return table

    @staticmethod
    def backward(ctx, grad: Tensor):
        halo: Halo = ctx.halo
        n = halo.shard.size
        back = grad.new_empty(halo.rows_sent, *grad.shape[1:])
        dist.all_to_all_single(back, grad[n:].contiguous(), list(halo.send_counts),
                               list(halo.recv_counts), group=halo.shard.group)
        gx = grad[:n].clone().index_add_(0, halo.send_rows, back)
        if ctx.tanh:  # d tanh = 1 - tanh^2, from the table's own rows
            (table,) = ctx.saved_tensors
            torch.ops.aten.tanh_backward.grad_input(gx, table[:n], grad_input=gx)
        return gx, None, None
