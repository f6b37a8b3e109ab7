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
CPUs), ``eager`` the PyTorch reference (each tile's own top :math:`k` by
:func:`top_k_exact`, merged with the running rows by a stable sort; any device and dtype),
``auto`` the native kernel where it applies and builds.
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
        row, rank = (self.ids >= 0).nonzero(as_tuple=True)
        return row, self.ids[row, rank], rank, self.values[row, rank]
