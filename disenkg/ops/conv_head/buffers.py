"""Per-call buffers of the chunked head, reused across image chunks, and its cache tiles.

Fresh multi-megabyte allocations per chunk cost page faults that took as long as the GEMMs
filling them, so every per-chunk buffer (patches, feature maps and their gradients) is
allocated once per call; the last chunk uses views of the first rows.

Within a chunk the convolution runs in *tiles* of about :func:`tile_rows` patch rows
(:func:`tiles`; the capability probe's choice for the compute dtype on this CPU,
:func:`disenkg.ops.probe.tile_rows`): the patches of a tile, its conv GEMM, the ReLU /
mask epilogue and, in
backward, their gradients and the col2im fold all touch a few megabytes that stay in the
CPU's cache, where a whole chunk's ``(chunk * L, k*k + 1)`` patches and ``(chunk * L, C)``
maps (34 and 82 MB at the FB15k-237 default) stream through memory between passes. The
fc GEMMs, whose outputs are as wide as a feature map (``L * C`` columns), run in
:data:`FC_COLUMN_TILE`-column slices (:func:`column_mm`) for the same reason.
"""

from __future__ import annotations

import torch
from torch import Tensor

from disenkg.ops.patches import patches, positions, relu_mask_

__all__ = ["FC_CHUNKS", "FC_COLUMN_TILE", "TILE_ROWS", "PatchStore", "Workspace",
           "add_tn_", "blocks", "chunks", "column_mm", "tile_images", "tile_rows", "tiles"]

#: image chunks whose feature maps share one fc GEMM (its K dimension in the weight
#: gradient). 2 x 256 images ran the isolated bf16 weight-gradient GEMM + accumulation
#: ~20 % faster than 256 at a time, but whole training steps showed no difference beyond
#: run-to-run noise, so the default stays 1 (the layout of the measured benchmark).
FC_CHUNKS = 1
#: patch rows per cache tile when set; ``None``: :func:`tile_rows` asks the probe
TILE_ROWS: int | None = None
#: output columns per slice of the fc gradient GEMMs (:func:`column_mm`)
FC_COLUMN_TILE = 2048


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in steps of ``chunk``."""
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def tile_rows(dtype: torch.dtype, device: torch.device | str = "cpu") -> int:
    """Patch rows per cache tile for the compute ``dtype``: :data:`TILE_ROWS` when set,
    else on a CPU the capability probe's choice (:func:`disenkg.ops.probe.tile_rows`),
    elsewhere :data:`~disenkg.ops.probe.DEFAULT_TILE_ROWS`."""
    if TILE_ROWS is not None:
        return TILE_ROWS
    from disenkg.ops import probe

    if torch.device(device).type != "cpu":
        return probe.DEFAULT_TILE_ROWS
    return probe.tile_rows(dtype)


def tile_images(L: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> int:
    """Images of ``L`` positions per cache tile: ``max(1, tile_rows // L)``."""
    return max(1, tile_rows(dtype, device) // max(L, 1))


def tiles(n: int, L: int, dtype: torch.dtype, device: torch.device | str = "cpu"
          ) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` images of ``L`` positions each in
    tiles of :func:`tile_images` images."""
    return chunks(n, tile_images(L, dtype, device))


def column_mm(a: Tensor, b: Tensor, out: Tensor, accumulate: bool = False) -> Tensor:
    """``out = a @ b`` (``out += a @ b`` with ``accumulate``) in slices of
    :data:`FC_COLUMN_TILE` output columns; ``out`` must have ``a``'s dtype."""
    for j in range(0, out.shape[1], FC_COLUMN_TILE):
        o = out[:, j:j + FC_COLUMN_TILE]
        if accumulate:
            o.addmm_(a, b[:, j:j + FC_COLUMN_TILE])
        else:
            torch.mm(a, b[:, j:j + FC_COLUMN_TILE], out=o)
    return out


def add_tn_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    r"""``acc += a^T b`` for ``(m, p)`` and ``(m, q)`` with a long shared ``m`` (a tile's
    rows): the two halves of the rows as one batched product, :math:`a_1^\top b_1 +
    a_2^\top b_2`, summed in ``acc``'s dtype (a float32 ``acc`` of bfloat16 products gets
    each half rounded, not the whole). oneDNN runs these small-output, long-inner products
    badly: on an Intel Xeon with AMX the filter gradient ``(200, 16 000) x (16 000, 82)``
    took 1.05 ms in bfloat16 as one product and 0.73 ms as two halves, the patches' Gram
    matrix 0.55 and 0.39 ms (float32 in bfloat16 mode), 1.06 and 0.90 ms in float32. An odd
    ``m`` runs as one product."""
    m = a.shape[0]
    if m % 2 or not m:
        prod = a.t() @ b
    else:
        h = m // 2
        prod = torch.bmm(a.view(2, h, a.shape[1]).transpose(1, 2),
                         b.view(2, h, b.shape[1])).sum(0, dtype=acc.dtype)
    return acc.add_(prod)


def blocks(n: int, chunk: int) -> list[list[tuple[int, int]]]:
    """The chunks, :data:`FC_CHUNKS` at a time (consecutive, so each block is one row
    range)."""
    c = chunks(n, chunk)
    return [c[i:i + FC_CHUNKS] for i in range(0, len(c), FC_CHUNKS)]


class PatchStore:
    """The augmented patches of all images in the compute dtype, one ``(n * L, k*k + 1)``
    matrix per group, built once per training call and shared by the head's forward and
    backward and the moments' backward, which would otherwise each rebuild them chunk by
    chunk. Used for bfloat16 heads (``n * L * (k*k + 1) * 2`` bytes: 403 MB at the
    FB15k-237 default; a float32 store would double that, so float32 heads rebuild).

    Args:
        xl (Tensor): the images ``(n, G, H, W)`` in the compute dtype.
        k (int): the kernel size.
        impl (str): the patch kernels (:mod:`disenkg.ops.patches`).
    """

    def __init__(self, xl: Tensor, k: int, impl: str):
        self.L = positions(xl, k)
        self.cols = [patches(xl[:, grp], k, impl=impl) for grp in range(xl.shape[1])]

    def rows(self, grp: int, start: int, stop: int) -> Tensor:
        """The patches of images ``start:stop`` of group ``grp``."""
        return self.cols[grp][start * self.L:stop * self.L]


class Workspace:
    """Per-call buffers: ``feat`` holds the feature maps ``(G, fc_rows, L, C)`` of up to
    ``fc_rows`` images (:data:`FC_CHUNKS` chunks); ``dfeat`` (with ``grads``) one chunk of
    ``rows`` images; ``cols`` (the patches, unless a :class:`PatchStore` supplies them) and
    ``dcols`` (with ``grads``) one cache tile (:func:`tiles`)."""

    def __init__(self, rows: int, fc_rows: int, L: int, kk: int, C: int, G: int,
                 dtype: torch.dtype, device: torch.device, grads: bool = False,
                 store: PatchStore | None = None):
        self.store = store
        tile = min(rows, tile_images(L, dtype, device)) * L  # the largest tile's rows
        self.cols = None if store is not None else torch.empty(tile, kk + 1, dtype=dtype,
                                                               device=device)
        self.feat = torch.empty(G, fc_rows, L, C, dtype=dtype, device=device)
        self.dfeat = torch.empty(rows, L * C, dtype=dtype, device=device) if grads else None
        self.dcols = torch.empty(tile, kk, dtype=dtype, device=device) if grads else None

    def patch_rows(self, x: Tensor, grp: int, k: int, start: int, impl: str) -> Tensor:
        """The patches of the tile ``x`` ``(n, G, H, W)`` (images ``start:start + n``) of
        group ``grp``: from the store, or built into ``cols``."""
        n = x.shape[0]
        if self.store is not None:
            return self.store.rows(grp, start, start + n)
        L = self.feat.shape[2]
        return patches(x[:, grp], k, out=self.cols[:n * L], impl=impl)

    def feature_tile(self, x: Tensor, grp: int, filters: Tensor, k: int,
                     keep: Tensor | None, impl: str, start: int, row: int) -> Tensor:
        """``relu_mask(cols_g @ filters_g^T)`` of group ``grp`` for the tile ``x``
        ``(n, G, H, W)`` (images ``start:start + n``, in the compute dtype; ``keep`` its
        ``(n, C)`` mask) into rows ``row:row + n`` of ``feat[grp]``; returns the patches
        (valid until the next tile)."""
        n = x.shape[0]
        L, C = self.feat.shape[2], self.feat.shape[3]
        cols = self.patch_rows(x, grp, k, start, impl)
        z = self.feat[grp, row:row + n]
        torch.mm(cols, filters[grp].t(), out=z.view(n * L, C))
        relu_mask_(z, keep, impl=impl)
        return cols

    def features(self, x: Tensor, filters: Tensor, k: int, keep: Tensor | None,
                 impl: str, start: int, row0: int = 0) -> Tensor:
        """:meth:`feature_tile` over the chunk ``x`` ``(n, G, H, W)`` (images
        ``start:start + n``; ``keep`` ``(G, n, C)``) into rows ``row0:row0 + n`` of
        ``feat``: ``(G, n, L, C)``, a view of the buffer."""
        n, G = x.shape[:2]
        L = self.feat.shape[2]
        for grp in range(G):
            for s, e in tiles(n, L, self.feat.dtype, self.feat.device):
                self.feature_tile(x[s:e], grp, filters, k,
                                  None if keep is None else keep[grp, s:e], impl, start + s,
                                  row0 + s)
        return self.feat[:, row0:row0 + n]
