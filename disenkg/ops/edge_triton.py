r"""Triton kernels for the relation-weighted edge products (imported lazily: ``triton`` is
optional), the GPU counterparts of the native CPU kernels in :mod:`disenkg.ops.edge_products`.

Three primitives, each without an ``(E, K, F)`` tensor and without float atomics (every
output row is written by the one program that owns it, so results are deterministic):

* **SDDMM** (:func:`sddmm`): one program per block of ``BLOCK_E`` edges and component
  ``k``, :math:`o_{e,k} = \sum_f a_{\mathrm{dst}(e),k,f}\, b_{\mathrm{src}(e),k,f}\,
  T_{r_e,k,f}` (``T`` optional), summed over ``F`` in ``BLOCK_F`` slices;
* **SpMM over a CSR order** (:func:`spmm`): one program per node ``n`` and component,
  looping over the node's edges in the CSR order (``ptr``, ``order``) in ``BLOCK_E``
  chunks, :math:`o_{n,k,:} = \sum_{e \ni n} w_{e,k}\, b_{\mathrm{other}(e),k,:} \odot
  T_{r_e,k,:}`;
* **per-relation reduction** (:func:`relation_sum`): the same loop over the relation CSR
  order, :math:`\rho_{r,k,:} = \sum_{e \in r} w_{e,k}\, a_{n(e),k,:} \odot
  b_{\mathrm{other}(e),k,:}` (the gradient of the relation table).

All products accumulate in float32 (float64 inputs accumulate in float64); offsets are
64-bit. The kernels hold a whole ``F`` row (``BLOCK_F`` = the next power of two >= F).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["relation_sum", "sddmm", "spmm"]


@triton.jit
def _sddmm_kernel(a_ptr, b_ptr, t_ptr, dst_ptr, src_ptr, rel_ptr, out_ptr, E, K, F,
                  HAS_T: tl.constexpr, ACC64: tl.constexpr, BLOCK_E: tl.constexpr,
                  BLOCK_F: tl.constexpr):
    pid = tl.program_id(0)
    k = tl.program_id(1).to(tl.int64)
    offs_e = pid.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E).to(tl.int64)
    mask_e = offs_e < E
    dst = tl.load(dst_ptr + offs_e, mask=mask_e, other=0)
    src = tl.load(src_ptr + offs_e, mask=mask_e, other=0)
    acc = tl.zeros((BLOCK_E,), tl.float64 if ACC64 else tl.float32)
    for f0 in range(0, F, BLOCK_F):
        offs_f = f0 + tl.arange(0, BLOCK_F)
        m = mask_e[:, None] & (offs_f < F)[None, :]
        a = tl.load(a_ptr + (dst * K + k)[:, None] * F + offs_f[None, :], mask=m, other=0.0)
        b = tl.load(b_ptr + (src * K + k)[:, None] * F + offs_f[None, :], mask=m, other=0.0)
        p = a * b
        if HAS_T:
            rel = tl.load(rel_ptr + offs_e, mask=mask_e, other=0)
            p = p * tl.load(t_ptr + (rel * K + k)[:, None] * F + offs_f[None, :], mask=m,
                            other=0.0)
        acc += tl.sum(p.to(acc.dtype), axis=1)
    tl.store(out_ptr + offs_e * K + k, acc, mask=mask_e)


@triton.jit
def _csr_kernel(a_ptr, b_ptr, t_ptr, w_ptr, ptr_ptr, order_ptr, node_ptr, other_ptr,
                rel_ptr, out_ptr, K, F,
                HAS_A: tl.constexpr, HAS_T: tl.constexpr, ACC64: tl.constexpr,
                BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """Row ``n`` of a CSR order: ``sum_e w[e,k] (a[node(e),k] if HAS_A) * b[other(e),k]
    (* T[rel(e),k] if HAS_T)``."""
    n = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1).to(tl.int64)
    start = tl.load(ptr_ptr + n)
    stop = tl.load(ptr_ptr + n + 1)
    offs_f = tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    acc = tl.zeros((BLOCK_F,), tl.float64 if ACC64 else tl.float32)
    for s in range(start, stop, BLOCK_E):
        idx = s + tl.arange(0, BLOCK_E).to(tl.int64)
        mask_e = idx < stop
        e = tl.load(order_ptr + idx, mask=mask_e, other=0)
        other = tl.load(other_ptr + e, mask=mask_e, other=0)
        w = tl.load(w_ptr + e * K + k, mask=mask_e, other=0.0)
        m = mask_e[:, None] & mask_f[None, :]
        p = tl.load(b_ptr + (other * K + k)[:, None] * F + offs_f[None, :], mask=m, other=0.0)
        if HAS_T:
            rel = tl.load(rel_ptr + e, mask=mask_e, other=0)
            p = p * tl.load(t_ptr + (rel * K + k)[:, None] * F + offs_f[None, :], mask=m,
                            other=0.0)
        if HAS_A:
            node = tl.load(node_ptr + e, mask=mask_e, other=0)
            p = p * tl.load(a_ptr + (node * K + k)[:, None] * F + offs_f[None, :], mask=m,
                            other=0.0)
        acc += tl.sum((p * w[:, None]).to(acc.dtype), axis=0)
    tl.store(out_ptr + (n * K + k) * F + offs_f, acc, mask=mask_f)


def _block_f(F: int) -> int:
    return max(16, triton.next_power_of_2(F))


def _check(*tensors: Tensor) -> None:
    bad = next((t for t in tensors if t is not None
                and t.dtype not in (torch.float32, torch.float64)), None)
    if bad is not None:
        raise ValueError(f"impl='triton' edge products need float32 or float64 tensors, got "
                         f"{bad.dtype}")


def sddmm(a: Tensor, b: Tensor, table: Tensor | None, src: Tensor, dst: Tensor,
          rel: Tensor) -> Tensor:
    """``(E, K)``: :math:`\\sum_f a_{dst} b_{src} T_{rel}` (``table`` optional)."""
    _check(a, b, table)
    _, K, F = a.shape
    E = src.numel()
    out = a.new_empty(E, K)
    if E == 0:
        return out
    block_e = 32
    grid = (triton.cdiv(E, block_e), K)
    _sddmm_kernel[grid](a.contiguous(), b.contiguous(),
                        table.contiguous() if table is not None else a, dst, src, rel, out,
                        E, K, F, HAS_T=table is not None, ACC64=a.dtype == torch.float64,
                        BLOCK_E=block_e, BLOCK_F=min(_block_f(F), 64))
    return out


def _csr(b: Tensor, table: Tensor | None, w: Tensor, ptr: Tensor, order: Tensor,
         other: Tensor, rel: Tensor, rows: int, a: Tensor | None = None,
         node: Tensor | None = None) -> Tensor:
    _check(a, b, table, w)
    _, K, F = b.shape
    out = b.new_empty(rows, K, F)
    if rows == 0:
        return out
    _csr_kernel[(rows, K)](a.contiguous() if a is not None else b, b.contiguous(),
                           table.contiguous() if table is not None else b, w.contiguous(),
                           ptr, order, node if node is not None else other, other, rel, out,
                           K, F, HAS_A=a is not None, HAS_T=table is not None,
                           ACC64=b.dtype == torch.float64, BLOCK_E=16,
                           BLOCK_F=_block_f(F))
    return out


def spmm(b: Tensor, table: Tensor | None, w: Tensor, ptr: Tensor, order: Tensor,
         other: Tensor, rel: Tensor, num_nodes: int) -> Tensor:
    """``(N, K, F)``: row ``n`` sums ``w_e b_{other(e)} * T_{rel(e)}`` over the edges of
    ``n`` in the CSR order ``(ptr, order)``."""
    return _csr(b, table, w, ptr, order, other, rel, num_nodes)


def relation_sum(a: Tensor, b: Tensor, w: Tensor, rel_ptr: Tensor, rel_order: Tensor,
                 node: Tensor, other: Tensor, rel: Tensor, num_relations: int) -> Tensor:
    """``(R, K, F)``: row ``r`` sums ``w_e a_{node(e)} * b_{other(e)}`` over the edges of
    relation ``r`` (the relation CSR order)."""
    return _csr(b, None, w, rel_ptr, rel_order, other, rel, num_relations, a=a, node=node)
