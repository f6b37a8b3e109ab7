r"""Chunked pure-torch mixture BCE: tiles over queries and entities, never holds
(B, K, N) or (B, N).

Tiles are ``ROW_BLOCK`` queries by as many entities as the memory budget allows: a
``(K, 512, 450)`` tile keeps the three GEMMs near their best shape on a CPU (all 2048
queries by ~110 entities ran them about a third slower).

Gradients are accumulated during the forward tile loop (Liger style) whenever autograd
needs them; ``backward`` then only rescales by the incoming scalar gradient. This costs
three GEMMs per tile instead of the four of a recompute-in-backward scheme (Cut
Cross-Entropy style), which is what matters on a CPU. For ``reduction="none"`` the
forward only computes the loss matrix and ``backward`` recomputes each tile.

Derivation (per element, component ``k``; ``l_k = log a_k + log sigma(x_k)``,
``m_k = log a_k + log sigma(-x_k)``, ``L1 = LSE_k l_k = log p``, ``L0 = LSE_k m_k = log(1-p)``,
loss ``-(t L1 + (1-t) L0)``)::

    pl_k = exp(l_k - L1), pm_k = exp(m_k - L0)   (posteriors; sum_k pl_k = sum_k pm_k = 1)
    dL1/dx_k = pl_k * sigma(-x_k)
    dL0/dx_k = -pm_k * sigma(x_k)
    d loss / d x_k      = -t pl_k sigma(-x_k) + (1 - t) pm_k sigma(x_k)
    d loss / d log a_k  = -(t pl_k + (1 - t) pm_k)

The log-sum-exps are written out so that ``exp(l - max_k l)`` is reused for ``pl``.

For ``K = 1`` this collapses to BCE-with-logits: ``softplus(x) - t x`` with gradient
``sigmoid(x) - t``, which gets its own fast path.

On a CPU the element-wise part of a float32 tile with a scalar target (the background of a
sparse target) runs as one fused native pass (``mixture_kernels.c``; the op's
``impl="native"``, or ``"auto"`` where it applies); :func:`tile` is its reference and the
path for everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from disenkg.ops import native
from disenkg.ops.mixture_bce.inputs import Target
from disenkg.ops.precision import bf16_matmul

__all__ = ["Grads", "chunk_size", "chunked_backward", "chunked_forward", "native_tile",
           "tile"]

#: the native tile's largest number of components (its per-thread block buffers)
NATIVE_MAX_K = 16

DEFAULT_BUDGET_BYTES = 16 * 2**20
#: queries per tile
ROW_BLOCK = 512
# Live (K, B, c) temporaries of one tile in the general path (x, l/m, el, em, 2 sigmoids).
_TEMPS = 6


def chunk_size(B: int, K: int, N: int, itemsize: int, budget: int | None = None) -> int:
    """Entities per tile of ``B`` queries so that the tile temporaries fit in ``budget``
    bytes."""
    budget = DEFAULT_BUDGET_BYTES if budget is None else budget
    c = budget // max(1, _TEMPS * B * K * itemsize)
    c = max(16, min(N, int(c)))
    return c


class Grads:
    """Accumulators for the gradients w.r.t. query, entity, log-attention and bias.

    ``q`` is ``(K, B, F)`` and ``e`` ``(K, N, F)``, both contiguous, so that every tile
    adds its GEMM in place into contiguous ``(rows, F)`` blocks.
    """

    def __init__(self, qk: Tensor, ek: Tensor, K: int, B: int, N: int, want_bias: bool):
        self.q = torch.zeros_like(qk)  # (K, B, F)
        self.e = ek.new_zeros(K, N, ek.shape[-1])  # (K, N, F)
        self.loga = qk.new_zeros(K, B)
        self.bias = qk.new_zeros(N) if want_bias else None


def tile(
    x: Tensor, loga: Tensor | None, t: Tensor | float, w: Tensor | float | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss and weighted gradients of one tile.

    Args:
        x: logits ``(K, R, C)``.
        loga: log attention ``(K, R, 1)``, or None when ``K = 1``.
        t: smoothed target, scalar or ``(R, C)``.
        w: gradient weight, scalar or ``(R, C)``; None skips the gradients.

    Returns:
        ``(loss (R, C), grad_x (K, R, C) or None, grad_loga (K, R) or None)``.
    """
    if loga is None:  # K == 1: BCE with logits.
        x0 = x[0]
        loss = F.softplus(x0) - t * x0
        if w is None:
            return loss, None, None
        g = torch.sigmoid(x0).sub_(t)
        g = g.mul_(w)
        return loss, g.unsqueeze(0), None
    # log-sum-exp over K by hand so that exp(l - max) is reused for the posteriors.
    l = F.logsigmoid(x).add_(loga)  # l_k = log a_k + log sigma(x_k)
    M1 = l.amax(0)
    el = (l - M1).exp_()
    S1 = el.sum(0)
    m = l.sub_(x)  # m_k = log a_k + log sigma(-x_k), in place of l
    M0 = m.amax(0)
    em = m.sub_(M0).exp_()
    S0 = em.sum(0)
    L1 = S1.log().add_(M1)  # log p
    L0 = S0.log().add_(M0)  # log(1 - p)
    loss = -(t * L1 + (1 - t) * L0) if isinstance(t, Tensor) else -(t * L1).add_(L0, alpha=1 - t)
    if w is None:
        return loss, None, None
    w1 = -t * w
    w0 = (1 - t) * w
    pl = el.div_(S1)  # exp(l - L1): posterior weights
    pm = em.div_(S0)  # exp(m - L0)
    if isinstance(w1, Tensor) or isinstance(w0, Tensor):
        gl = _wsum(pl, w1) - _wsum(pm, w0)  # d loss / d log a_k, summed over the tile
        gx = pl.mul_(torch.sigmoid(-x)).mul_(w1).add_(pm.mul_(torch.sigmoid(x)).mul_(w0))
        return loss, gx, gl
    # Scalar weights (the dense part of a mean / sum loss): with s = sigmoid(x) and
    # d = w0 pm - w1 pl, gl = -sum_c d and gx = w1 pl (1 - s) + w0 pm s = w1 pl + s d.
    plw = pl.mul_(w1)
    d = pm.mul_(w0).sub_(plw)
    gl = d.sum(-1).neg_()
    gx = d.mul_(torch.sigmoid(x)).add_(plw)
    return loss, gx, gl


def native_tile(x: Tensor, loga: Tensor | None, t: float, w: float | None,
                bias: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`tile` for a float32 CPU tile and scalar ``t`` / ``w`` in one native pass.

    Returns the loss *summed* over the tile (a 0-d float64 tensor) instead of its
    ``(R, C)`` matrix; the gradient w.r.t. ``x`` overwrites ``x`` (a fresh contiguous
    tile), and ``grad_loga`` is ``(K, R)`` (``None`` for ``K = 1``, like :func:`tile`).
    ``bias`` ``(C,)``, if given, is added to the logits ``x`` first (saving the broadcast
    copy of a ``baddbmm``).
    """
    K, R, C = x.shape
    if not (x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()):
        raise ValueError(f"the native tile needs a contiguous float32 CPU tile, got "
                         f"{x.dtype} on {x.device}")
    if bias is not None:
        if bias.shape != (C,):
            raise ValueError(f"bias must be ({C},), got {tuple(bias.shape)}")
        bias = bias.to(torch.float32).contiguous()
    if K > NATIVE_MAX_K:
        raise ValueError(f"the native tile supports up to {NATIVE_MAX_K} components, got {K}")
    la = None
    if loga is not None:
        if loga.shape != (K, R, 1):
            raise ValueError(f"log attention must be ({K}, {R}, 1), got {tuple(loga.shape)}")
        la = loga.reshape(K, R).to(torch.float32).contiguous()
    rows = torch.empty(R, dtype=torch.float64)
    gl = torch.zeros(K, R) if (w is not None and la is not None) else None
    native.kernel("mixture_bce_tile", torch.float32)(
        x.data_ptr(), None if bias is None else bias.data_ptr(),
        None if la is None else la.data_ptr(), K, R, C, float(t),
        0.0 if w is None else float(w), int(w is not None), rows.data_ptr(),
        None if gl is None else gl.data_ptr(), torch.get_num_threads())
    return rows.sum(), (x if w is not None else None), gl


def _tile_fn(impl: str, qk: Tensor, target: Target, w: Tensor | float | None):
    """The tile function for the dense (background) tiles of :func:`chunked_forward`
    (``impl``: :data:`disenkg.ops.native.IMPLS`)."""
    ok = (qk.dtype == torch.float32 and qk.device.type == "cpu" and target.dense is None
          and not isinstance(w, Tensor) and qk.shape[0] <= NATIVE_MAX_K)
    need = ("float32 CPU inputs, a sparse or constant target, scalar weights and "
            f"K <= {NATIVE_MAX_K}")
    return native_tile if native.use(impl, ok, need) else tile


def _wsum(p: Tensor, w: Tensor | float) -> Tensor:
    """``sum_c p[k, r, c] * w[r, c]`` for a scalar or ``(R, C)`` weight."""
    if isinstance(w, Tensor):
        return (p * w).sum(-1)
    return p.sum(-1).mul_(w)


def _tiles(K: int, B: int, N: int, itemsize: int, budget: int | None):
    """``(r0, r1, s, e)``: query rows ``r0:r1`` by entities ``s:e``."""
    rows = min(B, ROW_BLOCK)
    c = chunk_size(rows, K, N, itemsize, budget)
    for r0 in range(0, B, rows):
        for s in range(0, N, c):
            yield r0, min(B, r0 + rows), s, min(N, s + c)


def chunked_forward(
    qk: Tensor,
    ek: Tensor,
    loga: Tensor | None,
    bias: Tensor | None,
    target: Target,
    reduction: str,
    want_grad: bool,
    budget: int | None = None,
    impl: str = "auto",
    bf16: bool = False,
) -> tuple[Tensor, Grads | None]:
    """Loss (scalar for mean/sum, (B, N) for none) and, if ``want_grad``, its gradients.

    ``qk`` is ``(K, B, F)``, ``ek`` ``(K, N, F)``, ``loga`` ``(K, B, 1)`` or None (K=1).
    Gradients are of the *reduced* loss (so ``mean`` includes ``1 / (B N)``, with ``N``
    the whole candidate set's ``target.total_cols``).
    ``impl`` picks the element-wise tile (``auto`` / ``native`` / ``eager``; the loss matrix of
    ``reduction="none"`` always comes from :func:`tile`); ``bf16`` runs the GEMMs under
    :func:`~disenkg.ops.precision.bf16_matmul`.
    """
    K, B, _ = qk.shape
    N = ek.shape[1]
    scale = 1.0 / target.mean_count if reduction == "mean" else 1.0
    grads = Grads(qk, ek, K, B, N, bias is not None) if want_grad else None
    w = scale if want_grad else None
    total = qk.new_zeros(())
    out = qk.new_empty(B, N) if reduction == "none" else None
    s0 = target.s0  # the background's loss scale (a positive-class weight with smoothing)
    wb = None if w is None else w * s0
    fn = tile if (out is not None or target.scale is not None) else _tile_fn(
        impl, qk, target, wb)
    with bf16_matmul(bf16):
        for r0, r1, s, e in _tiles(K, B, N, qk.element_size(), budget):
            la = None if loga is None else loga[:, r0:r1]
            t = target.dense[r0:r1, s:e] if target.dense is not None else target.t0
            sc = target.scale[r0:r1, s:e] if target.scale is not None else s0
            wt = None if w is None else (w * sc if target.scale is not None else wb)
            if fn is native_tile:  # the bias joins inside the tile
                x = _logits(qk[:, r0:r1], ek[:, s:e], None, s, e)
                loss, gx, gl = fn(x, la, t, wt, None if bias is None else bias[s:e])
            else:
                x = _logits(qk[:, r0:r1], ek[:, s:e], bias, s, e)
                loss, gx, gl = fn(x, la, t, wt)
            if out is not None:
                out[r0:r1, s:e] = loss * sc if target.weighted else loss
            elif target.scale is not None:
                total += (loss * sc).sum()
            else:
                total += loss.sum() * s0 if s0 != 1.0 else loss.sum()
            if grads is not None:
                _accumulate(grads, gx, gl, qk, ek, r0, r1, s, e)
    if target.is_sparse and target.rows.numel():
        corr, gpos = _positive_correction(qk, ek, loga, bias, target, w)
        if out is not None:
            out.index_put_((target.rows, target.cols), corr, accumulate=True)
        else:
            total += corr.sum()
        if grads is not None:
            _scatter_positive(grads, gpos, qk, ek, target, loga is not None)
    if out is not None:
        return out, grads
    return total * scale, grads


def chunked_backward(
    qk: Tensor,
    ek: Tensor,
    loga: Tensor | None,
    bias: Tensor | None,
    target: Target,
    grad_out: Tensor,
    budget: int | None = None,
    bf16: bool = False,
) -> Grads:
    """Gradients for ``reduction="none"``: recompute each tile weighted by ``grad_out``."""
    K, B, _ = qk.shape
    N = ek.shape[1]
    grads = Grads(qk, ek, K, B, N, bias is not None)
    with bf16_matmul(bf16):
        for r0, r1, s, e in _tiles(K, B, N, qk.element_size(), budget):
            x = _logits(qk[:, r0:r1], ek[:, s:e], bias, s, e)
            t = target.dense[r0:r1, s:e] if target.dense is not None else target.t0
            sc = target.scale[r0:r1, s:e] if target.scale is not None else target.s0
            _, gx, gl = tile(x, None if loga is None else loga[:, r0:r1], t,
                             grad_out[r0:r1, s:e] * sc)
            _accumulate(grads, gx, gl, qk, ek, r0, r1, s, e)
    if target.is_sparse and target.rows.numel():
        w = grad_out[target.rows, target.cols].unsqueeze(-1)
        _, gpos = _positive_correction(qk, ek, loga, bias, target, w)
        _scatter_positive(grads, gpos, qk, ek, target, loga is not None)
    return grads


def _logits(qk: Tensor, e_tile: Tensor, bias: Tensor | None, s: int, e: int) -> Tensor:
    et = e_tile.transpose(1, 2)
    if bias is None:
        return torch.bmm(qk, et)
    return torch.baddbmm(bias[s:e].view(1, 1, -1), qk, et)


def _accumulate(grads: Grads, gx: Tensor, gl: Tensor | None, qk, ek, r0: int, r1: int,
                s: int, e: int) -> None:
    grads.q[:, r0:r1].baddbmm_(gx, ek[:, s:e])
    grads.e[:, s:e].baddbmm_(gx.transpose(1, 2), qk[:, r0:r1])
    if grads.bias is not None:
        if r0 == 0:
            grads.bias[s:e] = gx.sum((0, 1))
        else:
            grads.bias[s:e] += gx.sum((0, 1))
    if gl is not None:
        grads.loga[:, r0:r1] += gl


def _positive_correction(qk, ek, loga, bias, target: Target, w):
    """Loss change at the positives when their element loss moves from the background's
    ``s0 * loss(t0)`` to ``s1 * loss(t1)``, evaluated on gathered logits (``w``: the
    gradient weight, scalar or ``(P, 1)``)."""
    rows, cols = target.rows, target.cols
    x = (qk[:, rows] * ek[:, cols]).sum(-1, keepdim=True)  # (K, P, 1)
    if bias is not None:
        x = x + bias[cols].view(1, -1, 1)
    la = loga[:, rows] if loga is not None else None
    s0, s1 = target.s0, target.s1
    l1, g1x, g1l = tile(x, la, target.t1, None if w is None else w * s1)
    l0, g0x, g0l = tile(x, la, target.t0, None if w is None else w * s0)
    if s1 != 1.0 or s0 != 1.0:
        l1, l0 = l1 * s1, l0 * s0
    gx = None if g1x is None else (g1x - g0x)[..., 0]
    gl = None if g1l is None else g1l - g0l
    return (l1 - l0)[:, 0], (gx, gl)


def _scatter_positive(grads: Grads, gpos, qk, ek, target: Target, has_att: bool) -> None:
    gx, gl = gpos  # (K, P), (K, P) or None
    rows, cols = target.rows, target.cols
    g = gx.unsqueeze(-1)
    grads.q.index_add_(1, rows, g * ek[:, cols])
    grads.e.index_add_(1, cols, g * qk[:, rows])
    if grads.bias is not None:
        grads.bias.index_add_(0, cols, gx.sum(0))
    if has_att and gl is not None:
        grads.loga.index_add_(1, rows, gl)

