r"""Triton kernels for the mixture BCE (imported lazily: ``triton`` is optional).

One program handles a ``(BLOCK_B, BLOCK_N)`` tile of (query, entity) pairs and loops over
the ``K`` components and over ``F`` in ``BLOCK_F`` slices, so no ``(B, K, N)`` tensor
exists. The mixture uses an online log-sum-exp over ``K``:

.. code-block:: text

    l_k = log a_k + logsigmoid(x_k)            m_k = l_k - x_k  (= log a_k + logsigmoid(-x_k))
    L1  = LSE_k l_k = log p                     L0  = LSE_k m_k = log(1 - p)
    loss = -(t L1 + (1 - t) L0)

Backward recomputes the logit tiles (Cut Cross-Entropy style). With
``c_k = l_k + m_k - log a_k = log a_k + logsigmoid(x_k) + logsigmoid(-x_k)``::

    d loss / d x_k     = w (-t exp(c_k - L1) + (1 - t) exp(c_k - L0))
    d loss / d log a_k = -w (t exp(l_k - L1) + (1 - t) exp(m_k - L0))
    grad_q[b, k]  += sum_n gx[b, n] e[n, k]      (atomic add over N tiles)
    grad_e[n, k]  += sum_b gx[b, n] q[b, k]      (atomic add over B tiles)

Sparse positives are handled outside the kernel by the exact affine correction in ``t``
(see :mod:`disenkg.ops.mixture_bce.chunked`), so the kernel only needs the constant
background target ``t0`` or, when given, a dense target tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from disenkg.ops.mixture_bce.inputs import Target

__all__ = ["triton_backward", "triton_forward"]


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _logit_tile(
    q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
    s_qb, s_qk, s_eb, s_ek, F,
    HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        offs_f = f0 + tl.arange(0, BLOCK_F)
        mask_f = offs_f < F
        q = tl.load(
            q_ptr + offs_b[:, None] * s_qb + k * s_qk + offs_f[None, :],
            mask=mask_b[:, None] & mask_f[None, :], other=0.0,
        )
        e = tl.load(
            e_ptr + offs_n[None, :] * s_eb + k * s_ek + offs_f[:, None],
            mask=mask_n[None, :] & mask_f[:, None], other=0.0,
        )
        acc += tl.dot(q.to(tl.float32), e.to(tl.float32), allow_tf32=False)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _lse_pass(
    q_ptr, e_ptr, bias_ptr, loga_ptr, offs_b, offs_n, mask_b, mask_n,
    s_qb, s_qk, s_eb, s_ek, F, K,
    HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """Online log-sum-exp over k of l_k and m_k; returns (L1, L0)."""
    M1 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    M0 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    S1 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    S0 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    for k in range(0, K):
        x = _logit_tile(q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
                        s_qb, s_qk, s_eb, s_ek, F, HAS_BIAS, BLOCK_B, BLOCK_N, BLOCK_F)
        la = tl.load(loga_ptr + offs_b * K + k, mask=mask_b, other=0.0).to(tl.float32)
        l = la[:, None] + _logsigmoid(x)
        m = l - x
        n1 = tl.maximum(M1, l)
        S1 = S1 * tl.exp(M1 - n1) + tl.exp(l - n1)
        M1 = n1
        n0 = tl.maximum(M0, m)
        S0 = S0 * tl.exp(M0 - n0) + tl.exp(m - n0)
        M0 = n0
    return M1 + tl.log(S1), M0 + tl.log(S0)


@triton.jit
def _tile(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, B, N, F, K, t0, s_qb, s_qk, s_eb, s_ek,
    HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """This program's tile: offsets, masks, smoothed targets and the two log-sum-exps."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < N
    mask = mask_b[:, None] & mask_n[None, :]
    L1, L0 = _lse_pass(q_ptr, e_ptr, bias_ptr, loga_ptr, offs_b, offs_n, mask_b, mask_n,
                       s_qb, s_qk, s_eb, s_ek, F, K, HAS_BIAS, BLOCK_B, BLOCK_N, BLOCK_F)
    if HAS_DENSE:
        t = tl.load(t_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mask, other=0.0)
        t = t.to(tl.float32)
    else:
        t = t0
    return offs_b, offs_n, mask_b, mask_n, mask, t, L1, L0


@triton.jit
def _fwd_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, out_ptr,
    B, N, F, K, t0,
    s_qb, s_qk, s_eb, s_ek,
    HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, REDUCE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    offs_b, offs_n, mask_b, mask_n, mask, t, L1, L0 = _tile(
        q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, B, N, F, K, t0, s_qb, s_qk, s_eb, s_ek,
        HAS_BIAS, HAS_DENSE, BLOCK_B, BLOCK_N, BLOCK_F)
    loss = -(t * L1 + (1.0 - t) * L0)
    loss = tl.where(mask, loss, 0.0)
    if REDUCE:
        tl.atomic_add(out_ptr + offs_b, tl.sum(loss, axis=1), mask=mask_b)
    else:
        tl.store(out_ptr + offs_b[:, None] * N + offs_n[None, :], loss, mask=mask)


@triton.jit
def _bwd_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr,
    gq_ptr, ge_ptr, gbias_ptr, gloga_ptr,
    B, N, F, K, t0, w0,
    s_qb, s_qk, s_eb, s_ek,
    HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    offs_b, offs_n, mask_b, mask_n, mask, t, L1, L0 = _tile(
        q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, B, N, F, K, t0, s_qb, s_qk, s_eb, s_ek,
        HAS_BIAS, HAS_DENSE, BLOCK_B, BLOCK_N, BLOCK_F)
    if HAS_W:
        w = tl.load(w_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mask, other=0.0)
        w = w.to(tl.float32)
    else:
        w = w0
    w1 = tl.where(mask, -t * w, 0.0)
    wz = tl.where(mask, (1.0 - t) * w, 0.0)
    gb_acc = tl.zeros((BLOCK_N,), tl.float32)
    for k in range(0, K):
        x = _logit_tile(q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
                        s_qb, s_qk, s_eb, s_ek, F, HAS_BIAS, BLOCK_B, BLOCK_N, BLOCK_F)
        la = tl.load(loga_ptr + offs_b * K + k, mask=mask_b, other=0.0).to(tl.float32)
        ls = _logsigmoid(x)
        l = la[:, None] + ls
        m = l - x
        c = l + ls - x
        gx = w1 * tl.exp(c - L1) + wz * tl.exp(c - L0)
        gl = w1 * tl.exp(l - L1) - wz * tl.exp(m - L0)
        tl.atomic_add(gloga_ptr + offs_b * K + k, tl.sum(gl, axis=1), mask=mask_b)
        gb_acc += tl.sum(gx, axis=0)
        for f0 in range(0, F, BLOCK_F):
            offs_f = f0 + tl.arange(0, BLOCK_F)
            mask_f = offs_f < F
            mq = mask_b[:, None] & mask_f[None, :]
            me = mask_n[:, None] & mask_f[None, :]
            q = tl.load(q_ptr + offs_b[:, None] * s_qb + k * s_qk + offs_f[None, :],
                        mask=mq, other=0.0).to(tl.float32)
            e = tl.load(e_ptr + offs_n[:, None] * s_eb + k * s_ek + offs_f[None, :],
                        mask=me, other=0.0).to(tl.float32)
            gq = tl.dot(gx, e, allow_tf32=False)  # (BLOCK_B, BLOCK_F)
            ge = tl.dot(tl.trans(gx), q, allow_tf32=False)  # (BLOCK_N, BLOCK_F)
            tl.atomic_add(gq_ptr + offs_b[:, None] * s_qb + k * s_qk + offs_f[None, :],
                          gq, mask=mq)
            tl.atomic_add(ge_ptr + offs_n[:, None] * s_eb + k * s_ek + offs_f[None, :],
                          ge, mask=me)
    if HAS_BIAS:
        tl.atomic_add(gbias_ptr + offs_n, gb_acc, mask=mask_n)


_BLOCKS = {"BLOCK_B": 32, "BLOCK_N": 64, "BLOCK_F": 32}


def _prep(query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None):
    q = query.contiguous()
    e = entity.contiguous()
    la = loga.contiguous()
    b = bias.contiguous() if bias is not None else q  # dummy pointer when absent
    return q, e, la, b


def triton_forward(
    query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None, target: Target,
    reduction: str,
) -> Tensor:
    """Loss: per-row sums reduced to a scalar, or the ``(B, N)`` matrix for ``none``.

    The dense part uses the background target; sparse positives are corrected by the caller.
    """
    B, K, F = query.shape
    N = entity.shape[0]
    q, e, la, b = _prep(query, entity, loga, bias)
    reduce = reduction != "none"
    out = q.new_zeros(B, dtype=torch.float32) if reduce else q.new_empty(B, N, dtype=torch.float32)
    t = target.dense if target.dense is not None else q
    grid = (triton.cdiv(B, _BLOCKS["BLOCK_B"]), triton.cdiv(N, _BLOCKS["BLOCK_N"]))
    _fwd_kernel[grid](
        q, e, b, la, t, out, B, N, F, K, float(target.t0),
        q.stride(0), q.stride(1), e.stride(0), e.stride(1),
        HAS_BIAS=bias is not None, HAS_DENSE=target.dense is not None, REDUCE=reduce,
        **_BLOCKS,
    )
    out = out.to(query.dtype)
    return out.sum() if reduce else out


def triton_backward(
    query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None, target: Target,
    weight: Tensor | float,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients of ``sum(weight * loss)`` (dense part) w.r.t. query, entity, loga, bias."""
    B, K, F = query.shape
    N = entity.shape[0]
    q, e, la, b = _prep(query, entity, loga, bias)
    gq = torch.zeros(B, K, F, dtype=torch.float32, device=q.device)
    ge = torch.zeros(N, K, F, dtype=torch.float32, device=q.device)
    gl = torch.zeros(B, K, dtype=torch.float32, device=q.device)
    gb = torch.zeros(N, dtype=torch.float32, device=q.device)
    has_w = isinstance(weight, Tensor)
    w = weight.contiguous() if has_w else q
    t = target.dense if target.dense is not None else q
    grid = (triton.cdiv(B, _BLOCKS["BLOCK_B"]), triton.cdiv(N, _BLOCKS["BLOCK_N"]))
    _bwd_kernel[grid](
        q, e, b, la, t, w, gq, ge, gb, gl, B, N, F, K, float(target.t0),
        0.0 if has_w else float(weight),
        q.stride(0), q.stride(1), e.stride(0), e.stride(1),
        HAS_BIAS=bias is not None, HAS_DENSE=target.dense is not None, HAS_W=has_w,
        **_BLOCKS,
    )
    dt = query.dtype
    return gq.to(dt), ge.to(dt), gl.to(dt), (gb.to(dt) if bias is not None else None)
