"""Per-call buffers of the chunked head, reused across image chunks.

Fresh multi-megabyte allocations per chunk cost page faults that took as long as the GEMMs
filling them, so every per-chunk buffer (patches, feature maps and their gradients) is
allocated once per call; the last chunk uses views of the first rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from disenkg.ops.patches import patches, relu_mask_

__all__ = ["FC_CHUNKS", "PatchStore", "Workspace", "blocks", "chunks"]

#: image chunks whose feature maps share one fc GEMM (its K dimension in the weight
#: gradient). 2 x 256 images ran the isolated bf16 weight-gradient GEMM + accumulation
#: ~20 % faster than 256 at a time, but whole training steps showed no difference beyond
#: run-to-run noise, so the default stays 1 (the layout of the measured benchmark).
FC_CHUNKS = 1


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in steps of ``chunk``."""
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


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
        self.L = (xl.shape[2] - k + 1) * (xl.shape[3] - k + 1)
        self.cols = [patches(xl[:, grp], k, impl=impl) for grp in range(xl.shape[1])]

    def rows(self, grp: int, start: int, stop: int) -> Tensor:
        """The patches of images ``start:stop`` of group ``grp``."""
        return self.cols[grp][start * self.L:stop * self.L]


class Workspace:
    """Per-call buffers: ``feat`` holds the feature maps ``(G, fc_rows, L, C)`` of up to
    ``fc_rows`` images (:data:`FC_CHUNKS` chunks); ``cols`` (the patches, unless a
    :class:`PatchStore` supplies them), ``dfeat`` and ``dcols`` (with ``grads``) one chunk
    of ``rows`` images."""

    def __init__(self, rows: int, fc_rows: int, L: int, kk: int, C: int, G: int,
                 dtype: torch.dtype, device: torch.device, grads: bool = False,
                 store: PatchStore | None = None):
        self.store = store
        self.cols = None if store is not None else [
            torch.empty(rows * L, kk + 1, dtype=dtype, device=device) for _ in range(G)]
        self.feat = torch.empty(G, fc_rows, L, C, dtype=dtype, device=device)
        self.dfeat = torch.empty(rows, L * C, dtype=dtype, device=device) if grads else None
        self.dcols = torch.empty(rows * L, kk, dtype=dtype, device=device) if grads else None

    def patch_rows(self, x: Tensor, grp: int, k: int, start: int, impl: str) -> Tensor:
        """The patches of the chunk ``x`` ``(n, G, H, W)`` (images ``start:start + n``) of
        group ``grp``: from the store, or built into ``cols``."""
        n = x.shape[0]
        if self.store is not None:
            return self.store.rows(grp, start, start + n)
        L = self.feat.shape[2]
        return patches(x[:, grp], k, out=self.cols[grp][:n * L], impl=impl)

    def features(self, x: Tensor, filters: Tensor, k: int, keep: Tensor | None,
                 impl: str, start: int, row0: int = 0) -> Tensor:
        """``relu_mask(cols_g @ filters_g^T)`` for the chunk ``x`` ``(n, G, H, W)`` (already
        in the compute dtype; images ``start:start + n``) into rows ``row0:row0 + n`` of
        ``feat``: ``(G, n, L, C)``, a view of the buffer."""
        n, G = x.shape[:2]
        L, C = self.feat.shape[2], self.feat.shape[3]
        feat = self.feat[:, row0:row0 + n]
        for grp in range(G):
            cols = self.patch_rows(x, grp, k, start, impl)
            torch.mm(cols, filters[grp].t(), out=feat[grp].view(n * L, C))
            relu_mask_(feat[grp], None if keep is None else keep[grp], impl=impl)
        return feat
