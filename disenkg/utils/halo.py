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

A layer's backward reads the sender rows again. :meth:`Halo.extended` (with
``recompute``, the default of a sharded run) holds only the ``hi - lo`` own rows between
forward and backward and exchanges the halo rows a second time when the backward first
reads them (:func:`torch.autograd.graph.saved_tensors_hooks`): one more ``all_to_all``
per layer and step, bitwise the same rows, and a rank holds ``hi - lo`` rows where it
held ``hi - lo + H`` (on the 500k-entity synthetic KG at 4 shards ``H`` is 1.5 times
``hi - lo``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    ``send_rows`` the local rows sent, grouped by destination shard; ``recompute`` whether
    :meth:`extended` exchanges the halo rows again in backward instead of holding them;
    ``max_rows`` the most rows any shard of the group sends or receives in one exchange
    (which sets, alike on every shard, how many :data:`EXCHANGE_BYTES` pieces an exchange
    takes)."""

    shard: EntityShard
    edge_index: Tensor
    edge_type: Tensor
    ids: Tensor
    recv_counts: tuple[int, ...]
    send_rows: Tensor
    send_counts: tuple[int, ...]
    recompute: bool = True
    max_rows: int = 0

    @classmethod
    def build(cls, shard: EntityShard, edge_index: Tensor, edge_type: Tensor, *,
              recompute: bool = True) -> Halo:
        """From the whole graph's edges (``(2, E)``, row 0 sender, row 1 receiver, global
        ids); a collective call on the ranks of ``shard.group``. ``recompute``: what
        :meth:`extended` does."""
        local_index, local_type, ids, recv = cls.plan(shard, edge_index, edge_type)
        send = torch.empty_like(recv)
        dist.all_to_all_single(send, recv, group=shard.group)  # rows each shard asks of me
        wanted = ids.new_empty(int(send.sum()))
        dist.all_to_all_single(wanted, ids, send.tolist(), recv.tolist(), group=shard.group)
        most = torch.tensor([max(len(ids), len(wanted))], device=ids.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX, group=shard.group)
        return cls(shard=shard, edge_index=local_index, edge_type=local_type, ids=ids,
                   recv_counts=tuple(recv.tolist()), send_rows=wanted - shard.lo,
                   send_counts=tuple(send.tolist()), recompute=recompute,
                   max_rows=int(most))

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
                    send_counts=self.send_counts, recompute=self.recompute,
                    max_rows=self.max_rows, **move)

    def pieces(self, row_bytes: int) -> int:
        """How many pieces an exchange of rows of ``row_bytes`` takes: the same on every
        shard of the group (from :attr:`max_rows`), each at most about
        :data:`EXCHANGE_BYTES` per shard."""
        return max(1, -(-self.max_rows * row_bytes // EXCHANGE_BYTES))

    def send_rows_of(self, own: Tensor, out: Tensor) -> Tensor:
        """Fills ``out`` ``(H, ...)`` with the halo rows, each shard sending the rows of
        ``own`` ``(hi - lo, ...)`` its neighbours need (a collective call, in
        :meth:`pieces`)."""
        P = self.pieces(own[0].numel() * own.element_size())
        if P == 1:
            return _exchange(out, own.index_select(0, self.send_rows), self.recv_counts,
                             self.send_counts, self)
        for p in range(P):
            sent, send_counts = _piece(self.send_rows, self.send_counts, p, P)
            spans, recv_counts = _spans(self.recv_counts, p, P)
            buf = _exchange(own.new_empty(sum(recv_counts), *own.shape[1:]),
                            own.index_select(0, sent), recv_counts, send_counts, self)
            at = 0
            for lo, hi in spans:
                out[lo:hi] = buf[at:at + hi - lo]
                at += hi - lo
        return out

    def return_grads(self, grad: Tensor, gx: Tensor) -> Tensor:
        """Adds to ``gx`` ``(hi - lo, ...)`` the gradients of its rows that the other shards
        computed, sending them this shard's halo rows' gradients ``grad`` ``(H, ...)``
        (the reverse of :meth:`send_rows_of`; a collective call, in :meth:`pieces`)."""
        P = self.pieces(gx[0].numel() * gx.element_size())
        if P == 1:
            back = _exchange(grad.new_empty(self.rows_sent, *grad.shape[1:]),
                             grad.contiguous(), self.send_counts, self.recv_counts, self)
            return gx.index_add_(0, self.send_rows, back)
        for p in range(P):
            rows, send_counts = _piece(self.send_rows, self.send_counts, p, P)
            spans, recv_counts = _spans(self.recv_counts, p, P)
            out = torch.cat([grad[lo:hi] for lo, hi in spans])
            back = _exchange(grad.new_empty(len(rows), *grad.shape[1:]), out, send_counts,
                             recv_counts, self)
            gx.index_add_(0, rows, back)
        return gx

    def extend(self, x: Tensor, *, tanh: bool = False) -> Tensor:
        """``(hi - lo + H, ...)``: this shard's rows ``x`` (``tanh(x)`` with ``tanh``)
        followed by its halo rows (a collective call; autograd sends the halo rows'
        gradients back to their owners). The rows are written into the returned table
        directly: with ``tanh``, the activation's output is not held a second time."""
        return _Extend.apply(self._own_rows(x), self, tanh, None)

    def _own_rows(self, x: Tensor) -> Tensor:
        if x.shape[0] != self.shard.size:
            raise ValueError(f"expected this shard's {self.shard.size} rows, got {x.shape[0]}")
        return x

    @contextmanager
    def extended(self, x: Tensor, *, tanh: bool = False) -> Iterator[Tensor]:
        """:meth:`extend` for the block that uses the table; with :attr:`recompute` (and a
        graph being recorded), what the block saves for backward of the table is held as
        a reference to this shard's own rows, and the halo rows are exchanged again when
        the backward first reads them (see the module docstring; a collective in the
        backward, at the same point on every rank, since every rank runs the same graph).
        With ``tanh`` the memory of ``x`` (the pre-activation) becomes the table in
        backward: nothing may read ``x`` after the block (a change to it in place is an
        error in backward)."""
        if not (self.recompute and torch.is_grad_enabled() and x.requires_grad):
            yield self.extend(x, tanh=tanh)
            return
        x = self._own_rows(x)
        if tanh and (x.is_leaf or not _whole_storage(x)):  # (x's memory becomes the
            x = x.clone()  # table in backward: never a parameter's, nor a view's)
        rows = _OwnRows(self, tanh)
        table = _Extend.apply(x, self, tanh, rows)
        ptr = table.untyped_storage().data_ptr()

        def pack(t: Tensor):
            if t.untyped_storage().data_ptr() != ptr:
                return t
            return _TableView(rows, t.storage_offset(), tuple(t.shape), t.stride())

        def unpack(p):
            return p.tensor() if isinstance(p, _TableView) else p

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield table


def _whole_storage(x: Tensor) -> bool:
    """Whether ``x`` is contiguous and the whole of its storage."""
    return (x.is_contiguous() and x.storage_offset() == 0
            and x.untyped_storage().nbytes() == x.numel() * x.element_size())


#: bytes per shard of one piece of an exchange (:meth:`Halo.pieces`): the send and receive
#: buffers of a piece are what an exchange adds to a rank's memory
EXCHANGE_BYTES = 32 * 2**20


def _piece(rows: Tensor, counts: tuple[int, ...], p: int, P: int
           ) -> tuple[Tensor, tuple[int, ...]]:
    """Piece ``p`` of ``P`` of ``rows`` grouped in blocks of ``counts``: each block's
    ``[p c / P, (p + 1) c / P)``, and the piece's counts."""
    parts, sizes, at = [], [], 0
    for c in counts:
        lo, hi = at + p * c // P, at + (p + 1) * c // P
        parts.append(rows[lo:hi])
        sizes.append(hi - lo)
        at += c
    return torch.cat(parts), tuple(sizes)


def _spans(counts: tuple[int, ...], p: int, P: int
           ) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """The row ranges of piece ``p`` of ``P`` of consecutive blocks of ``counts`` (as
    :func:`_piece` cuts them), and the piece's counts."""
    spans, at = [], 0
    for c in counts:
        spans.append((at + p * c // P, at + (p + 1) * c // P))
        at += c
    return spans, tuple(hi - lo for lo, hi in spans)


def _exchange(out: Tensor, rows: Tensor, out_counts: tuple[int, ...],
              in_counts: tuple[int, ...], halo: Halo) -> Tensor:
    """``out`` (``sum(out_counts)`` rows, from each shard in turn) from every shard's
    ``rows`` (``in_counts`` rows to each shard in turn): the one ``all_to_all`` of every
    exchange of this module, rows forward and gradients back."""
    dist.all_to_all_single(out, rows, list(out_counts), list(in_counts),
                           group=halo.shard.group)
    return out


class _OwnRows:
    """What a recomputed table keeps between forward and backward: the layer's input
    ``own`` (this shard's rows, set by the forward) and, once the backward has read it, the
    rebuilt table (dropped by the exchange's own backward, the last to need it).

    With ``tanh`` the input is the pre-activation, which nothing else holds after the
    encoder's pass: the table is rebuilt in its memory, grown in place, with the tanh
    written over it, so the own rows are held once, and nothing is copied in forward."""

    def __init__(self, halo: Halo, tanh: bool):
        self.halo, self.tanh = halo, tanh
        self.own: Tensor | None = None
        self.version = 0
        self.table: Tensor | None = None

    def keep(self, x: Tensor) -> None:
        """Holds the layer input ``x`` (the pre-activation with ``tanh``; its memory is
        reused in backward, so it must be ``x``'s own, which :meth:`Halo.extended`
        checks)."""
        self.own, self.version = x, x._version

    def activated(self) -> Tensor:
        """The own rows as the layer read them (tanh applied)."""
        n = self.halo.shard.size
        if self.table is not None:
            return self.table[:n]
        return torch.tanh(self.own) if self.tanh else self.own

    def rebuilt(self) -> Tensor:
        if self.table is None:
            halo, own = self.halo, self.own
            if own._version != self.version:
                raise RuntimeError("a layer input held for the halo's recompute was "
                                   "modified in place after the forward")
            n, shape = halo.shard.size, (halo.shard.size + halo.size, *own.shape[1:])
            if self.tanh:  # grown in place, the activation written over the input
                storage = own.untyped_storage()
                storage.resize_(own.element_size() * own[0].numel() * shape[0])
                table = own.new_empty(0).set_(storage, 0, shape)
                torch.tanh(table[:n], out=table[:n])
            else:
                table = own.new_empty(shape)
                table[:n] = own
            halo.send_rows_of(table[:n], table[n:])
            self.table = table
        return self.table


@dataclass(frozen=True)
class _TableView:
    """A saved view of a recomputed table: its place in the table's storage."""

    rows: _OwnRows
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def tensor(self) -> Tensor:
        return self.rows.rebuilt().as_strided(self.shape, self.stride, self.offset)


class _Extend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, halo: Halo, tanh: bool, rows: _OwnRows | None) -> Tensor:
        n = halo.shard.size
        table = x.new_empty(n + halo.size, *x.shape[1:])
        own = table[:n]
        if tanh:
            torch.tanh(x, out=own)
        else:
            own.copy_(x)
        halo.send_rows_of(own, table[n:])
        ctx.halo, ctx.tanh, ctx.rows = halo, tanh, rows
        if rows is not None:  # the input alone
            rows.keep(x)
        elif tanh:
            ctx.save_for_backward(table)
        return table

    @staticmethod
    def backward(ctx, grad: Tensor):
        halo: Halo = ctx.halo
        n = halo.shard.size
        # the own rows' gradient is built in the incoming table gradient's own rows (read
        # by nothing after this function): no second (n, ...) buffer at a rank's peak
        grad = grad.contiguous()
        gx = halo.return_grads(grad[n:], grad[:n])
        rows: _OwnRows | None = ctx.rows
        if ctx.tanh:  # d tanh = 1 - tanh^2, from the table's own rows
            own = rows.activated() if rows is not None else ctx.saved_tensors[0][:n]
            torch.ops.aten.tanh_backward.grad_input(gx, own, grad_input=gx)
        if rows is not None:  # the last reader is done; the graph (and with it this
            rows.own = rows.table = ctx.rows = None  # ctx) may outlive the backward
        return gx, None, None, None
