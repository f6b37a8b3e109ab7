r"""The exact top :math:`k` of score rows that arrive a column tile at a time.

Completing a KG ranks every entity for millions of queries; the ``(B, N)`` scores of a
query batch never need to exist at once. :class:`RunningTopK` keeps, for each of ``B``
rows, the best :math:`k` entries seen so far, ordered by

.. math:: (s_{bn} \text{ descending},\; n \text{ ascending}),

exactly as a stable descending sort of the whole row orders them (ties go to the smaller
column). Tiles come in ascending column order, so an entry enters a row only when it is
strictly greater than the row's current :math:`k`-th value. ``-inf`` and ``NaN`` scores are
never selected (a filtered entry is set to ``-inf``); a row with fewer selectable entries
has fewer answers.

``impl``: ``native`` is a C/OpenMP kernel (one pass over the tile in cache, a block of
columns skipped with one vectorised comparison against the :math:`k`-th value; float32 on
CPUs), ``eager`` PyTorch on any device, ``auto`` the native kernel where it applies and
builds. The PyTorch path packs each entry of a float32 (or narrower) tile into one int64
key, the order-preserving bits of :math:`-s` above the column, so a single
``torch.topk(largest=False)`` over the running keys and the tile's selects exactly, ties
included, without a host synchronisation per tile (the GPU path); float64 tiles take each
tile's own top :math:`k` by :func:`top_k_exact` and a stable merge.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from disenkg.ops import native
from disenkg.ops.impls import KERNEL_IMPLS, check_impl

__all__ = ["RunningTopK", "top_k_exact"]


def top_k_exact(ranked: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The top ``k`` of each row of ``ranked`` ``(B, N)`` by (value descending, column
    ascending), as a stable descending sort would give them. Returns ``(row, col, rank)``
    of the selected entries, rows in order, ranks ``0..k-1`` within each row."""
    B, N = ranked.shape
    k = min(k, N)
    kth = torch.topk(ranked, k, dim=1).values[:, -1:]  # (B, 1)
    row, col = (ranked >= kth).nonzero(as_tuple=True)  # row-major: cols ascending per row
    val = ranked[row, col]
    order = torch.argsort(-val, stable=True)  # by value, ties keep column order
    order = order[torch.argsort(row[order], stable=True)]  # then by row, stably
    row, col = row[order], col[order]
    starts = torch.searchsorted(row, torch.arange(B, device=row.device))
    rank = torch.arange(len(row), device=row.device) - starts[row]
    keep = rank < k
    return row[keep], col[keep], rank[keep]


class RunningTopK:
    """The running top ``k`` of ``rows`` score rows (see the module docstring).

    Args:
        rows: the number of rows ``B``.
        k: entries kept per row.
        device: where the state lives (the tiles' device).
        dtype: the tiles' dtype.
        impl: ``"auto"``, ``"native"`` or ``"eager"``.
    """

    def __init__(self, *, rows: int, k: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, impl: str = "auto") -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        check_impl(impl, KERNEL_IMPLS)
        device = torch.device(device or "cpu")
        self.k = k
        self.values = torch.full((rows, k), -math.inf, dtype=dtype, device=device)
        self.ids = torch.full((rows, k), -1, dtype=torch.long, device=device)
        self._next = 0
        self._native = native.use(impl, device.type == "cpu" and dtype == torch.float32,
                                  "float32 scores on a CPU")
        self._keys = (None if self._native or dtype.itemsize > 4
                      else torch.full((rows, k), _EMPTY, dtype=torch.long, device=device))

    def update(self, tile: Tensor, col0: int) -> None:
        """Takes the columns ``col0 .. col0 + T - 1`` of every row, ``tile`` ``(B, T)``;
        ``col0`` must not be below the end of the previous tile."""
        B, T = tile.shape
        if B != self.values.shape[0]:
            raise ValueError(f"the tile has {B} rows, expected {self.values.shape[0]}")
        if col0 < self._next:
            raise ValueError(f"tiles must come in ascending column order: col0 {col0} is "
                             f"below the previous tile's end {self._next}")
        self._next = col0 + T
        if T == 0:
            return
        if self._native:
            if tile.stride(1) != 1:
                tile = tile.contiguous()
            native.load().topk_update_f32(tile.data_ptr(), B, T, tile.stride(0), col0,
                                          self.k, self.values.data_ptr(),
                                          self.ids.data_ptr(), torch.get_num_threads())
            return
        if self._keys is not None:
            keys = torch.cat([self._keys, _keys(tile, col0)], 1)
            self._keys = torch.topk(keys, min(self.k, keys.shape[1]), dim=1,
                                    largest=False).values
            if self._keys.shape[1] < self.k:  # only while fewer than k columns were seen
                pad = self._keys.new_full((B, self.k - self._keys.shape[1]), _EMPTY)
                self._keys = torch.cat([self._keys, pad], 1)
            return
        x = torch.nan_to_num(tile, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        row, col, rank = top_k_exact(x, self.k)
        kk = min(self.k, T)
        tv = torch.full((B, kk), -math.inf, dtype=self.values.dtype, device=x.device)
        ti = torch.full((B, kk), -1, dtype=torch.long, device=x.device)
        tv[row, rank] = x[row, col]
        ti[row, rank] = col + col0
        # the running entries have smaller columns than the tile's: a stable sort by value
        # keeps every tie in column order
        v = torch.cat([self.values, tv], 1)
        i = torch.cat([self.ids, ti], 1)
        order = torch.argsort(-v, dim=1, stable=True)[:, :self.k]
        self.values = v.gather(1, order)
        self.ids = i.gather(1, order).masked_fill_(self.values == -math.inf, -1)

    def result(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(row, col, rank, value)`` of the selected entries: rows in order, ranks
        ``0..`` within each row."""
        if self._keys is not None:
            self.values, self.ids = _unpack(self._keys, self.values.dtype)
        row, rank = (self.ids >= 0).nonzero(as_tuple=True)
        return row, self.ids[row, rank], rank, self.values[row, rank]


#: the key of an empty slot, and of -inf / NaN entries: larger than every real key
_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


def _keys(tile: Tensor, col0: int) -> Tensor:
    """int64 keys whose ascending order is (value descending, column ascending): the high
    32 bits the float32 bits of the value mapped to an order-reversing integer (-0 counted
    as +0, as comparisons do; centred on 0 so the key stays a signed int64), the low 32
    bits the column; -inf and NaN get :data:`_EMPTY`."""
    x = tile.float() + 0.0  # -0.0 -> +0.0
    b = x.view(torch.int32).to(torch.int64) & _LOW32  # the raw bits, unsigned
    asc = torch.where(b >= 0x80000000, b ^ _LOW32, b | 0x80000000)  # ascending with value
    cols = torch.arange(col0, col0 + x.shape[1], device=x.device, dtype=torch.int64)
    key = ((_LOW32 - asc - (1 << 31)) << 32) | cols  # the high part centred: signed
    return key.masked_fill_(~(x > -math.inf), _EMPTY)  # NaN compares false


def _unpack(keys: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(values, ids)`` of :func:`_keys` keys: empty slots ``-inf`` / ``-1``."""
    empty = keys == _EMPTY
    asc = _LOW32 - ((keys >> 32) + (1 << 31))
    b = torch.where(asc >= 0x80000000, asc & 0x7FFFFFFF, asc ^ _LOW32)
    b = torch.where(b >= 0x80000000, b - (1 << 32), b)  # back to signed int32 range
    values = b.to(torch.int32).view(torch.float32).to(dtype).masked_fill(empty, -math.inf)
    ids = (keys & _LOW32).masked_fill(empty, -1)
    return values, ids
