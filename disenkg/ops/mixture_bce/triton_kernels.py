r"""Triton kernels for the mixture BCE (imported lazily: ``triton`` is optional).

One program handles a ``(BLOCK_B, BLOCK_N)`` tile of (query, entity) pairs and loops over
the ``K`` components and over ``F`` in ``BLOCK_F`` slices, so no ``(B, K, N)`` tensor
exists. The mixture uses an online log-sum-exp over ``K``:

.. code-block:: text

    l_k = log a_k + logsigmoid(x_k)            m_k = l_k - x_k  (= log a_k + logsigmoid(-x_k))
    L1  = LSE_k l_k = log p                     L0  = LSE_k m_k = log(1 - p)
    loss = -(t L1 + (1 - t) L0)

With ``c_k = l_k + m_k - log a_k = log a_k + logsigmoid(x_k) + logsigmoid(-x_k)`` and the
element weight ``w``::

    d loss / d x_k     = w (-t exp(c_k - L1) + (1 - t) exp(c_k - L0))
    d loss / d log a_k = -w (t exp(l_k - L1) + (1 - t) exp(m_k - L0))
    grad_q[b, k]  += sum_n gx[b, n] e[n, k]
    grad_e[n, k]  += sum_b gx[b, n] q[b, k]

Schedules (the logits of a tile are recomputed where needed, Cut Cross-Entropy style;
never stored in memory):

* loss only (:func:`triton_forward`): one pass over ``k`` per tile;
* loss and gradients in the forward pass (:func:`triton_grads` with ``with_loss=True``,
  what training uses, as the chunked CPU path): for ``K <= ONCE_MAX_K`` the ``K`` logit
  tiles of a ``(BLOCK_B, BLOCK_N)`` tile are computed once and kept in registers
  (``K`` is then a compile-time constant); the maxima, the sums and the gradients all come
  from them (:func:`_once_sweep`), with eight special-function evaluations per logit
  (twelve in the log-sum-exp form below). Larger ``K``: the log-sum-exp pass and the
  gradient pass each compute the tile (twice per step; a separate backward would need
  three). Gradients are added with atomics across tiles;
* deterministic (``torch.use_deterministic_algorithms(True)``, or ``deterministic=True``):
  no float atomics; one kernel owns query rows and loops over all entity tiles (grad_q,
  grad_log_a, the loss rows), another owns entity rows and loops over all query tiles
  (grad_e, grad_bias); each computes every tile (twice in all, four times above
  ``ONCE_MAX_K``).

Launch configurations (:data:`LAUNCH`) are chosen so that no kernel spills a tile on sm_90
(with Triton 3.9 the training variants spill nothing at all);
``experiments/triton_compile_report.py --check`` verifies it, and that the deterministic
kernels hold no float atomics, by compiling for the GPU on any machine.

Offsets are 64-bit (``N * K * F`` may exceed ``2^31``). Precision: ``bf16=False`` computes
the products in float32 exactly (``input_precision="ieee"``: no TF32); ``bf16=True``
rounds the GEMM inputs to bfloat16 for the tensor cores and accumulates in float32; the
element-wise part, the loss and all gradients are float32 either way. Inputs must be
float32, bfloat16 or float16 (float64 is refused by the caller, :mod:`.api`).

Sparse positives are handled outside the kernels by the exact affine correction in ``t``
(see :mod:`disenkg.ops.mixture_bce.chunked`), so the kernels only need the constant
background target ``t0`` or, when given, a dense target tile.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from disenkg.ops.mixture_bce.inputs import Target

__all__ = ["triton_backward", "triton_forward", "triton_grads"]


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _dot(a, b, DOT_BF16: tl.constexpr):
    """``a @ b`` accumulated in float32: ``DOT_BF16`` 0 = exact float32 inputs, 1 =
    bfloat16 inputs (tensor cores), 2 = the same bfloat16-rounded inputs multiplied in
    float32 (the interpreter, whose bfloat16 ``tl.dot`` is not numeric)."""
    if DOT_BF16 == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    if DOT_BF16 == 2:
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32),
                      input_precision="ieee")
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _logit_tile(
    q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
    s_qb, s_qk, s_eb, s_ek, F,
    HAS_BIAS: tl.constexpr, DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
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
        acc += _dot(q, e, DOT_BF16)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _lse_pass(
    q_ptr, e_ptr, bias_ptr, loga_ptr, offs_b, offs_n, mask_b, mask_n,
    s_qb, s_qk, s_eb, s_ek, F, K,
    HAS_BIAS: tl.constexpr, DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """Online log-sum-exp over k of l_k and m_k; returns (L1, L0)."""
    M1 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    M0 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    S1 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    S0 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    for k in range(0, K):
        x = _logit_tile(q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
                        s_qb, s_qk, s_eb, s_ek, F, HAS_BIAS, DOT_BF16, BLOCK_B, BLOCK_N,
                        BLOCK_F)
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
def _offsets(pid, BLOCK: tl.constexpr, n):
    """64-bit offsets of block ``pid`` and their mask."""
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    return offs, offs < n


@triton.jit
def _targets(t_ptr, t0, offs_b, offs_n, mask, N, HAS_DENSE: tl.constexpr):
    # one return: a constexpr branch that returns early still has the code after it
    # compiled (a tile and a scalar return type do not unify on the GPU)
    if HAS_DENSE:
        t = tl.load(t_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mask,
                    other=0.0).to(tl.float32)
    else:
        t = t0
    return t


@triton.jit
def _weights(w_ptr, w0, t, offs_b, offs_n, mask, N, HAS_W: tl.constexpr):
    """The two element weights ``-t w`` and ``(1 - t) w`` (0 outside the tile)."""
    if HAS_W:
        w = tl.load(w_ptr + offs_b[:, None] * N + offs_n[None, :], mask=mask, other=0.0)
        w = w.to(tl.float32)
    else:
        w = w0
    return tl.where(mask, -t * w, 0.0), tl.where(mask, (1.0 - t) * w, 0.0)


@triton.jit
def _add(ptr, val, mask, ATOMIC: tl.constexpr):
    """``*ptr += val``: an atomic add, or a read-modify-write by the one owning program."""
    if ATOMIC:
        tl.atomic_add(ptr, val, mask=mask)
    else:
        tl.store(ptr, tl.load(ptr, mask=mask, other=0.0) + val, mask=mask)


@triton.jit
def _grad_gemms(
    q_ptr, e_ptr, gq_ptr, ge_ptr, gx, k, offs_b, offs_n, mask_b, mask_n,
    s_qb, s_qk, s_eb, s_ek, F,
    DOT_BF16: tl.constexpr, DO_Q: tl.constexpr, DO_E: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """``grad_q[:, k] += gx @ e[:, k]`` (``DO_Q``) and ``grad_e[:, k] += gx^T @ q[:, k]``
    (``DO_E``) for one tile's ``gx`` (BLOCK_B, BLOCK_N), in ``BLOCK_F`` slices."""
    for f0 in range(0, F, BLOCK_F):
        offs_f = f0 + tl.arange(0, BLOCK_F)
        mask_f = offs_f < F
        me = mask_n[:, None] & mask_f[None, :]
        mq = mask_b[:, None] & mask_f[None, :]
        if DO_Q:
            e = tl.load(e_ptr + offs_n[:, None] * s_eb + k * s_ek + offs_f[None, :],
                        mask=me, other=0.0)
            _add(gq_ptr + offs_b[:, None] * s_qb + k * s_qk + offs_f[None, :],
                 _dot(gx, e, DOT_BF16), mq, ATOMIC)  # (BLOCK_B, BLOCK_F)
        if DO_E:
            q = tl.load(q_ptr + offs_b[:, None] * s_qb + k * s_qk + offs_f[None, :],
                        mask=mq, other=0.0)
            _add(ge_ptr + offs_n[:, None] * s_eb + k * s_ek + offs_f[None, :],
                 _dot(tl.trans(gx), q, DOT_BF16), me, ATOMIC)  # (BLOCK_N, BLOCK_F)


@triton.jit
def _grad_pass(
    q_ptr, e_ptr, bias_ptr, loga_ptr, gq_ptr, ge_ptr, gloga_ptr,
    offs_b, offs_n, mask_b, mask_n, w1, wz, L1, L0,
    s_qb, s_qk, s_eb, s_ek, F, K,
    HAS_BIAS: tl.constexpr, DOT_BF16: tl.constexpr, DO_Q: tl.constexpr,
    DO_E: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """Adds this tile's gradients to grad_q / grad_log_a (``DO_Q``) and grad_e (``DO_E``);
    returns the tile's column sums of ``gx`` (the bias gradient)."""
    gb_acc = tl.zeros((BLOCK_N,), tl.float32)
    for k in range(0, K):
        x = _logit_tile(q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
                        s_qb, s_qk, s_eb, s_ek, F, HAS_BIAS, DOT_BF16, BLOCK_B, BLOCK_N,
                        BLOCK_F)
        la = tl.load(loga_ptr + offs_b * K + k, mask=mask_b, other=0.0).to(tl.float32)
        ls = _logsigmoid(x)
        l = la[:, None] + ls
        m = l - x
        c = l + ls - x
        gx = w1 * tl.exp(c - L1) + wz * tl.exp(c - L0)
        if DO_Q:
            gl = w1 * tl.exp(l - L1) - wz * tl.exp(m - L0)
            _add(gloga_ptr + offs_b * K + k, tl.sum(gl, axis=1), mask_b, ATOMIC)
        gb_acc += tl.sum(gx, axis=0)
        _grad_gemms(q_ptr, e_ptr, gq_ptr, ge_ptr, gx, k, offs_b, offs_n, mask_b, mask_n,
                    s_qb, s_qk, s_eb, s_ek, F, DOT_BF16, DO_Q, DO_E, ATOMIC, BLOCK_F)
    return gb_acc


@triton.jit
def _once_sweep(
    q_ptr, e_ptr, bias_ptr, loga_ptr, gq_ptr, ge_ptr, gloga_ptr,
    offs_b, offs_n, mask_b, mask_n, mask, t, w1, wz,
    s_qb, s_qk, s_eb, s_ek, F,
    KC: tl.constexpr, HAS_BIAS: tl.constexpr, WITH_LOSS: tl.constexpr,
    DOT_BF16: tl.constexpr, DO_Q: tl.constexpr, DO_E: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """One tile with its ``KC`` logit tiles computed once and kept (``KC`` is a compile-time
    constant): maxima ``M1 = max_k l_k``, ``M0 = max_k m_k``; sums ``S1 = sum_k e^{l_k -
    M1}``, ``S0 = sum_k e^{m_k - M0}``; then, with ``sigma_k = e^{logsigmoid(x_k)}`` and
    ``1 - sigma_k = e^{logsigmoid(x_k) - x_k}``::

        d loss / d x_k     = (w1 / S1) e^{l_k - M1} (1 - sigma_k) + (wz / S0) e^{m_k - M0} sigma_k
        d loss / d log a_k = (w1 / S1) e^{l_k - M1} - (wz / S0) e^{m_k - M0}

    (``w1 = -t w``, ``wz = (1 - t) w``); ``L1 = M1 + log S1`` and ``L0 = M0 + log S0`` only
    for the loss. Returns the tile's loss row sums and bias-gradient column sums."""
    xs = ()
    lss = ()
    M1 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    M0 = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)
    for k in tl.static_range(KC):
        x = _logit_tile(q_ptr, e_ptr, bias_ptr, k, offs_b, offs_n, mask_b, mask_n,
                        s_qb, s_qk, s_eb, s_ek, F, HAS_BIAS, DOT_BF16, BLOCK_B, BLOCK_N,
                        BLOCK_F)
        la = tl.load(loga_ptr + offs_b * KC + k, mask=mask_b, other=0.0).to(tl.float32)
        ls = _logsigmoid(x)
        xs = xs + (x,)
        lss = lss + (ls,)
        M1 = tl.maximum(M1, la[:, None] + ls)
        M0 = tl.maximum(M0, la[:, None] + ls - x)
    S1 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    S0 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
    for k in tl.static_range(KC):
        la = tl.load(loga_ptr + offs_b * KC + k, mask=mask_b, other=0.0).to(tl.float32)
        l = la[:, None] + lss[k]
        S1 += tl.exp(l - M1)
        S0 += tl.exp(l - xs[k] - M0)
    rows = tl.zeros((BLOCK_B,), tl.float32)
    if WITH_LOSS:
        L1 = M1 + tl.log(S1)
        L0 = M0 + tl.log(S0)
        rows = tl.sum(tl.where(mask, -(t * L1 + (1.0 - t) * L0), 0.0), axis=1)
    i1 = w1 / S1
    i0 = wz / S0
    gb_acc = tl.zeros((BLOCK_N,), tl.float32)
    for k in tl.static_range(KC):
        la = tl.load(loga_ptr + offs_b * KC + k, mask=mask_b, other=0.0).to(tl.float32)
        l = la[:, None] + lss[k]
        r1 = i1 * tl.exp(l - M1)
        r0 = i0 * tl.exp(l - xs[k] - M0)
        gx = r1 * tl.exp(lss[k] - xs[k]) + r0 * tl.exp(lss[k])
        if DO_Q:
            _add(gloga_ptr + offs_b * KC + k, tl.sum(r1 - r0, axis=1), mask_b, ATOMIC)
        gb_acc += tl.sum(gx, axis=0)
        _grad_gemms(q_ptr, e_ptr, gq_ptr, ge_ptr, gx, k, offs_b, offs_n, mask_b, mask_n,
                    s_qb, s_qk, s_eb, s_ek, F, DOT_BF16, DO_Q, DO_E, ATOMIC, BLOCK_F)
    return rows, gb_acc


@triton.jit
def _fwd_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, out_ptr,
    B, N, F, K, t0,
    s_qb, s_qk, s_eb, s_ek,
    HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, REDUCE: tl.constexpr,
    DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """The loss of one tile: row sums (``REDUCE``) or the ``(B, N)`` matrix."""
    offs_b, mask_b = _offsets(tl.program_id(0), BLOCK_B, B)
    offs_n, mask_n = _offsets(tl.program_id(1), BLOCK_N, N)
    mask = mask_b[:, None] & mask_n[None, :]
    L1, L0 = _lse_pass(q_ptr, e_ptr, bias_ptr, loga_ptr, offs_b, offs_n, mask_b, mask_n,
                       s_qb, s_qk, s_eb, s_ek, F, K, HAS_BIAS, DOT_BF16, BLOCK_B, BLOCK_N,
                       BLOCK_F)
    t = _targets(t_ptr, t0, offs_b, offs_n, mask, N, HAS_DENSE)
    loss = tl.where(mask, -(t * L1 + (1.0 - t) * L0), 0.0)
    if REDUCE:
        tl.atomic_add(out_ptr + offs_b, tl.sum(loss, axis=1), mask=mask_b)
    else:
        tl.store(out_ptr + offs_b[:, None] * N + offs_n[None, :], loss, mask=mask)


@triton.jit
def _tile_sweep(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, gq_ptr, ge_ptr, gloga_ptr,
    offs_b, offs_n, mask_b, mask_n, N, F, K, t0, w0,
    s_qb, s_qk, s_eb, s_ek,
    KC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_W: tl.constexpr,
    WITH_LOSS: tl.constexpr, DOT_BF16: tl.constexpr, DO_Q: tl.constexpr,
    DO_E: tl.constexpr, ATOMIC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """One tile; returns its loss row sums (zeros without ``WITH_LOSS``) and its
    bias-gradient column sums. ``KC > 0`` (= K, a compile-time constant): the logit tiles
    are computed once (:func:`_once_sweep`); ``KC == 0``: the log-sum-exp pass, then the
    gradient pass, each computing them."""
    mask = mask_b[:, None] & mask_n[None, :]
    t = _targets(t_ptr, t0, offs_b, offs_n, mask, N, HAS_DENSE)
    w1, wz = _weights(w_ptr, w0, t, offs_b, offs_n, mask, N, HAS_W)
    if KC > 0:
        rows, gb = _once_sweep(q_ptr, e_ptr, bias_ptr, loga_ptr, gq_ptr, ge_ptr, gloga_ptr,
                               offs_b, offs_n, mask_b, mask_n, mask, t, w1, wz,
                               s_qb, s_qk, s_eb, s_ek, F, KC, HAS_BIAS, WITH_LOSS, DOT_BF16,
                               DO_Q, DO_E, ATOMIC, BLOCK_B, BLOCK_N, BLOCK_F)
    else:
        L1, L0 = _lse_pass(q_ptr, e_ptr, bias_ptr, loga_ptr, offs_b, offs_n, mask_b, mask_n,
                           s_qb, s_qk, s_eb, s_ek, F, K, HAS_BIAS, DOT_BF16, BLOCK_B,
                           BLOCK_N, BLOCK_F)
        rows = tl.zeros((BLOCK_B,), tl.float32)
        if WITH_LOSS:
            rows = tl.sum(tl.where(mask, -(t * L1 + (1.0 - t) * L0), 0.0), axis=1)
        gb = _grad_pass(q_ptr, e_ptr, bias_ptr, loga_ptr, gq_ptr, ge_ptr, gloga_ptr,
                        offs_b, offs_n, mask_b, mask_n, w1, wz, L1, L0,
                        s_qb, s_qk, s_eb, s_ek, F, K, HAS_BIAS, DOT_BF16, DO_Q, DO_E,
                        ATOMIC, BLOCK_B, BLOCK_N, BLOCK_F)
    return rows, gb


@triton.jit
def _tile_grad_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, out_ptr,
    gq_ptr, ge_ptr, gbias_ptr, gloga_ptr,
    B, N, F, K, t0, w0,
    s_qb, s_qk, s_eb, s_ek,
    KC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_W: tl.constexpr,
    WITH_LOSS: tl.constexpr, DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """One tile's gradients (and, ``WITH_LOSS``, its loss row sums), added with atomics."""
    offs_b, mask_b = _offsets(tl.program_id(0), BLOCK_B, B)
    offs_n, mask_n = _offsets(tl.program_id(1), BLOCK_N, N)
    rows, gb = _tile_sweep(q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, gq_ptr, ge_ptr,
                           gloga_ptr, offs_b, offs_n, mask_b, mask_n, N, F, K, t0, w0,
                           s_qb, s_qk, s_eb, s_ek, KC, HAS_BIAS, HAS_DENSE, HAS_W, WITH_LOSS,
                           DOT_BF16, True, True, True, BLOCK_B, BLOCK_N, BLOCK_F)
    if WITH_LOSS:
        tl.atomic_add(out_ptr + offs_b, rows, mask=mask_b)
    if HAS_BIAS:
        tl.atomic_add(gbias_ptr + offs_n, gb, mask=mask_n)


@triton.jit
def _rows_grad_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, out_ptr, gq_ptr, gloga_ptr,
    B, N, F, K, t0, w0,
    s_qb, s_qk, s_eb, s_ek,
    KC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_W: tl.constexpr,
    WITH_LOSS: tl.constexpr, DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """Deterministic: this program owns ``BLOCK_B`` query rows and sweeps all entities,
    so grad_q, grad_log_a and the loss rows are written without atomics."""
    offs_b, mask_b = _offsets(tl.program_id(0), BLOCK_B, B)
    rows = tl.zeros((BLOCK_B,), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        r, _ = _tile_sweep(q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, gq_ptr, gq_ptr,
                           gloga_ptr, offs_b, offs_n, mask_b, offs_n < N, N, F, K, t0, w0,
                           s_qb, s_qk, s_eb, s_ek, KC, HAS_BIAS, HAS_DENSE, HAS_W, WITH_LOSS,
                           DOT_BF16, True, False, False, BLOCK_B, BLOCK_N, BLOCK_F)
        rows += r
    if WITH_LOSS:
        tl.store(out_ptr + offs_b, rows, mask=mask_b)


@triton.jit
def _cols_grad_kernel(
    q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, ge_ptr, gbias_ptr,
    B, N, F, K, t0, w0,
    s_qb, s_qk, s_eb, s_ek,
    KC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_W: tl.constexpr,
    DOT_BF16: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """Deterministic: this program owns ``BLOCK_N`` entities and sweeps all queries, so
    grad_e and grad_bias are written without atomics."""
    offs_n, mask_n = _offsets(tl.program_id(0), BLOCK_N, N)
    gb = tl.zeros((BLOCK_N,), tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        _, g = _tile_sweep(q_ptr, e_ptr, bias_ptr, loga_ptr, t_ptr, w_ptr, ge_ptr, ge_ptr,
                           ge_ptr, offs_b, offs_n, offs_b < B, mask_n, N, F, K, t0, w0,
                           s_qb, s_qk, s_eb, s_ek, KC, HAS_BIAS, HAS_DENSE, HAS_W, False,
                           DOT_BF16, False, True, False, BLOCK_B, BLOCK_N, BLOCK_F)
        gb += g
    if HAS_BIAS:
        tl.store(gbias_ptr + offs_n, gb, mask=mask_n)


#: the largest K whose K logit tiles are computed once and kept in registers per tile
#: (:func:`_once_sweep`); above it the gradient sweeps compute each tile twice
ONCE_MAX_K = 8


def _cfg(b: int, n: int, f: int, warps: int = 8) -> dict:
    return dict(BLOCK_B=b, BLOCK_N=n, BLOCK_F=f, num_warps=warps, num_stages=1)


#: launch configurations per kernel: ``(largest K, configuration)`` pairs, the first whose
#: K bound holds applies (``None``: any K). Tile sizes (``tl.dot`` needs each >= 16),
#: warps and pipeline stages are the largest tiles that compile for sm_90 (H100 / H200)
#: without spilling registers in both precisions in what training launches (the
#: kept-tile sweeps hold K logit tiles, so their tiles shrink with K):
#: ``experiments/triton_compile_report.py`` compiles every kernel ahead of time on any
#: machine and checks it; its ``--sweep`` re-derives this table. Chosen from the compiled
#: code, not from GPU timings (none measured yet). Re-run ``--check`` after any kernel
#: edit: ptxas' allocation near the limit shifts (loading log a once per component into
#: a tuple, instead of three cached loads, spilled 80 B).
LAUNCH: dict[str, list[tuple[int | None, dict]]] = {
    "fwd": [(None, _cfg(32, 64, 32))],
    "tile": [(4, _cfg(32, 64, 16)), (ONCE_MAX_K, _cfg(32, 32, 16)), (None, _cfg(32, 64, 16))],
    "rows": [(4, _cfg(32, 64, 16)), (ONCE_MAX_K, _cfg(32, 16, 16)), (None, _cfg(32, 64, 16))],
    "cols": [(2, _cfg(32, 32, 16)), (3, _cfg(64, 32, 16)), (4, _cfg(32, 32, 16)),
             (ONCE_MAX_K, _cfg(32, 16, 16)), (None, _cfg(64, 32, 16))],
}


def _launch(kind: str, K: int) -> dict:
    """The :data:`LAUNCH` configuration of ``kind`` at ``K`` components."""
    return next(dict(cfg) for bound, cfg in LAUNCH[kind] if bound is None or K <= bound)


def _dot_mode(bf16: bool) -> int:
    """:func:`_dot`'s ``DOT_BF16``: 2 under ``TRITON_INTERPRET=1``, where the same rounding
    is emulated."""
    if not bf16:
        return 0
    return 2 if os.environ.get("TRITON_INTERPRET") == "1" else 1


def _prep(query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None):
    q = query.contiguous()
    e = entity.contiguous()
    la = loga.contiguous()
    b = bias.contiguous() if bias is not None else q  # dummy pointer when absent
    return q, e, la, b


def triton_forward(
    query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None, target: Target,
    reduction: str, *, bf16: bool = False,
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
    cfg = _launch("fwd", K)
    grid = (triton.cdiv(B, cfg["BLOCK_B"]), triton.cdiv(N, cfg["BLOCK_N"]))
    _fwd_kernel[grid](
        q, e, b, la, t, out, B, N, F, K, float(target.t0),
        q.stride(0), q.stride(1), e.stride(0), e.stride(1),
        HAS_BIAS=bias is not None, HAS_DENSE=target.dense is not None, REDUCE=reduce,
        DOT_BF16=_dot_mode(bf16), **cfg,
    )
    out = out.to(query.dtype)
    return out.sum() if reduce else out


def triton_grads(
    query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None, target: Target,
    weight: Tensor | float, *, with_loss: bool = False, bf16: bool = False,
    deterministic: bool | None = None,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients of ``sum(weight * loss)`` (dense part) w.r.t. query, entity, log a and
    bias, and with ``with_loss`` the unweighted loss summed (a scalar) from the same
    tiles; ``deterministic`` (default: :func:`torch.are_deterministic_algorithms_enabled`)
    avoids float atomics (see the module docstring).

    Returns ``(loss or None, grad_query, grad_entity, grad_loga, grad_bias or None)`` in
    the inputs' dtype.
    """
    B, K, F = query.shape
    N = entity.shape[0]
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    q, e, la, b = _prep(query, entity, loga, bias)
    gq = torch.zeros(B, K, F, dtype=torch.float32, device=q.device)
    ge = torch.zeros(N, K, F, dtype=torch.float32, device=q.device)
    gl = torch.zeros(B, K, dtype=torch.float32, device=q.device)
    gb = torch.zeros(N, dtype=torch.float32, device=q.device)
    out = torch.zeros(B, dtype=torch.float32, device=q.device)
    has_w = isinstance(weight, Tensor)
    w = weight.contiguous() if has_w else q
    w0 = 0.0 if has_w else float(weight)
    t = target.dense if target.dense is not None else q
    flags = dict(KC=K if K <= ONCE_MAX_K else 0, HAS_BIAS=bias is not None,
                 HAS_DENSE=target.dense is not None, HAS_W=has_w, DOT_BF16=_dot_mode(bf16))
    strides = (q.stride(0), q.stride(1), e.stride(0), e.stride(1))
    if deterministic:
        rows, cols = _launch("rows", K), _launch("cols", K)
        _rows_grad_kernel[(triton.cdiv(B, rows["BLOCK_B"]),)](
            q, e, b, la, t, w, out, gq, gl, B, N, F, K, float(target.t0), w0, *strides,
            WITH_LOSS=with_loss, **flags, **rows)
        _cols_grad_kernel[(triton.cdiv(N, cols["BLOCK_N"]),)](
            q, e, b, la, t, w, ge, gb, B, N, F, K, float(target.t0), w0, *strides, **flags,
            **cols)
    else:
        cfg = _launch("tile", K)
        grid = (triton.cdiv(B, cfg["BLOCK_B"]), triton.cdiv(N, cfg["BLOCK_N"]))
        _tile_grad_kernel[grid](q, e, b, la, t, w, out, gq, ge, gb, gl, B, N, F, K,
                                float(target.t0), w0, *strides, WITH_LOSS=with_loss,
                                **flags, **cfg)
    dt = query.dtype
    loss = out.sum().to(dt) if with_loss else None
    return (loss, gq.to(dt), ge.to(dt), gl.to(dt),
            gb.to(dt) if bias is not None else None)


def triton_backward(
    query: Tensor, entity: Tensor, loga: Tensor, bias: Tensor | None, target: Target,
    weight: Tensor | float, *, bf16: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients of ``sum(weight * loss)`` (dense part) w.r.t. query, entity, loga, bias."""
    _, gq, ge, gl, gb = triton_grads(query, entity, loga, bias, target, weight, bf16=bf16)
    return gq, ge, gl, gb
