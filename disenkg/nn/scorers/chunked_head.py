r"""Memory-bounded ``fc(dropout2d(relu(BN(conv(x)))))`` for the convolutional scorers.

The feature maps of ConvE / InteractE are the largest activations of DisenKGAT training
(FB15k-237 default: 6144 images x 200 filters x 20 x 20 = 2 GB per tensor, several alive).
In training mode :func:`conv_bn_head` processes the images in chunks and keeps only the
input (and the dropout mask) for backward, with **exact** batch-norm semantics:

* the convolution is a GEMM on channels-last patches (:func:`disenkg.ops.patches`) with a
  ones column, :math:`y_g = [W \,|\, b]\,[\mathrm{cols}_g \,|\, 1]^\top` per group ``g``
  (filters shared by the groups, as InteractE's repeated filter bank);
* batch-norm statistics over *all* images follow from the patch moments
  :math:`m_g = \overline{\mathrm{cols}_g}` and :math:`S_g = \overline{\mathrm{cols}_g
  \mathrm{cols}_g^\top}` (``k^2 x k^2``), both read off one Gram matrix of the augmented
  patches: :math:`\mu_{gc} = w_c^\top m_g + b_c`,
  :math:`\sigma^2_{gc} = w_c^\top S_g w_c + 2 b_c w_c^\top m_g + b_c^2 - \mu_{gc}^2`;
  they are differentiable, so gradients flow through the statistics as in
  ``nn.BatchNorm2d`` (:class:`_Moments` has a direct backward, one GEMM per chunk);
* :class:`_Head` runs all chunks; its backward recomputes each chunk's feature maps once
  (the fc forward is not repeated) and applies the chain rule by hand::

      a = drop(relu(z)),  z = gamma * zhat + beta,  zhat = (y - mu) / sqrt(var + eps)
      dW_fc = g^T a,  da = g W_fc,  dz = da * mask * [z > 0]   (mask: 0 or 1 / (1 - p))
      dgamma = sum dz * zhat,  dbeta = sum dz,  dy = dz * gamma / sqrt(var + eps)
      dmu = -sum dy,  dvar = -1/2 sum dz * gamma * zhat / (var + eps)
      dW = sum dy cols^T,  db = sum dy,  dcols = W^T dy -> fold -> dx

  with BN and the conv bias folded into one per-channel ``scale * y + shift`` (the shift
  rides on the ones column, so the conv GEMM writes ``z`` directly), feature maps laid out
  ``(G, n, L, C)`` (group-major, position-major, channel last) so that the convolution,
  its two gradients and the fc are plain GEMMs without layout copies, ``[sum dz cols^T |
  sum dz]`` as one GEMM with the augmented patches, ``sum dz * zhat`` taken as
  ``inv * (sum dz * y - (mu - b) * sum dz)`` (no ``zhat`` tensor), dropout as a 0/1
  channel mask with its ``1 / (1 - p)`` folded into the fc weights' compute copy, and
  ``a > 0`` standing for ``mask * [z > 0]``.

Every per-chunk buffer (patches, feature maps and their gradients) is allocated once per
call and reused across chunks: fresh multi-megabyte allocations cost page faults that
here took as long as the GEMMs filling them.

Evaluation mode without gradients (with ``chunk``) runs the same GEMM layout with the
running statistics folded into the conv weights; ``chunk=None``, small training inputs
and evaluation mode with gradients use ``F.conv2d`` and the plain modules.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disenkg.ops.patches import (
    accumulate_,
    fold_patches,
    patches,
    relu_mask_,
    relu_mask_backward_,
)
from disenkg.ops.precision import auto_bf16, bf16_matmul, bf16_matmul_supported, check_precision

__all__ = ["compute_dtype", "conv_bn_head"]

def compute_dtype(precision: str, x: Tensor, chunk: int | None) -> torch.dtype:
    """The head's compute dtype: ``fp32`` is ``x.dtype``, ``bf16`` bfloat16, and ``auto``
    bfloat16 where :func:`~disenkg.ops.precision.auto_bf16` says so and the chunked path
    runs (``chunk``), else ``x.dtype``."""
    check_precision(precision)
    if precision == "auto":
        return torch.bfloat16 if chunk and auto_bf16(x) else x.dtype
    return torch.bfloat16 if precision == "bf16" else x.dtype


def _affine(w: Tensor, b: Tensor | None, mean: Tensor, var: Tensor, gamma: Tensor,
            beta: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """BN (+ conv bias) folded into one per-channel ``scale`` and ``shift``."""
    inv = torch.rsqrt(var + eps)
    scale = gamma * inv
    shift = beta - mean * scale
    if b is not None:
        shift = shift + b.repeat(groups) * scale
    return inv, scale, shift


def _augmented_filters(w: Tensor, scale: Tensor, shift: Tensor, groups: int,
                       dtype: torch.dtype) -> Tensor:
    """Per group ``[W * scale | shift]``: ``(G, C, k*k + 1)`` in ``dtype``."""
    C = w.shape[0]
    wv = w.reshape(1, C, -1) * scale.view(groups, C, 1)
    return torch.cat([wv, shift.view(groups, C, 1)], dim=-1).to(dtype)


#: image chunks whose feature maps share one fc GEMM (its K dimension in the weight
#: gradient). 2 x 256 images ran the isolated bf16 weight-gradient GEMM + accumulation
#: ~20 % faster than 256 at a time, but whole training steps showed no difference beyond
#: run-to-run noise, so the default stays 1 (the layout of the measured benchmark).
FC_CHUNKS = 1


class _PatchStore:
    """The augmented patches of all images in the compute dtype, one ``(n * L, k*k + 1)``
    matrix per group, built once per training call and shared by the head's forward and
    backward and the moments' backward, which would otherwise each rebuild them chunk by
    chunk. Used for bfloat16 heads (``n * L * (k*k + 1) * 2`` bytes: 403 MB at the
    FB15k-237 default; a float32 store would double that, so float32 heads rebuild)."""

    def __init__(self, xl: Tensor, k: int, impl: str):
        self.L = (xl.shape[2] - k + 1) * (xl.shape[3] - k + 1)
        self.cols = [patches(xl[:, grp], k, impl=impl) for grp in range(xl.shape[1])]

    def rows(self, grp: int, start: int, stop: int) -> Tensor:
        """The patches of images ``start:stop`` of group ``grp``."""
        return self.cols[grp][start * self.L:stop * self.L]


class _Workspace:
    """Per-call buffers, reused across chunks (views of the first rows for the last).
    ``feat`` holds the feature maps of up to ``fc_rows`` images (:data:`FC_CHUNKS`
    chunks); the other buffers one chunk of ``rows`` images. With a
    :class:`_PatchStore` the patches come from it instead of ``cols``."""

    def __init__(self, rows: int, fc_rows: int, L: int, kk: int, C: int, G: int,
                 dtype: torch.dtype, device: torch.device, grads: bool = False,
                 store: _PatchStore | None = None):
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


def _chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def _blocks(n: int, chunk: int) -> list[list[tuple[int, int]]]:
    """The chunks, :data:`FC_CHUNKS` at a time (consecutive, so each block is one row
    range)."""
    c = _chunks(n, chunk)
    return [c[i:i + FC_CHUNKS] for i in range(0, len(c), FC_CHUNKS)]


class _Head(torch.autograd.Function):
    """All chunks of the head given the batch statistics ``mean`` / ``var``. ``fc_w``
    arrives with its columns in the ``(G, L, C)`` feature order (see :func:`_fc_weight`);
    ``keep`` is dropout's boolean channel mask ``(G, n, C)`` (or ``None``) and ``fc_w_c``
    the compute copy of ``fc_w`` times dropout's ``1 / (1 - p)``: with ``a`` the 0/1-masked
    maps, ``fc(drop(relu(z))) = a (fc_w / (1 - p))^T``, ``dW_fc = g^T a / (1 - p)`` and
    ``dz = (g fc_w_c) * [a > 0]``."""

    @staticmethod
    def forward(ctx, x, w, b, mean, var, gamma, beta, fc_w, fc_b, keep, drop_scale, k,
                groups, eps, fc_w_c, chunk, impl, store):
        # fc_w receives the gradient; fc_w_c is the copy the GEMMs use (fc_w itself, or
        # bfloat16), whose dtype the feature maps share (fp32 statistics, outputs, grads).
        low = fc_w_c.dtype
        n, C, D = x.shape[0], w.shape[0], fc_w.shape[0]
        k2 = k * k
        L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
        _, scale, shift = _affine(w, b, mean, var, gamma, beta, groups, eps)
        filters = _augmented_filters(w, scale, shift, groups, low)
        xl = x.to(low)
        ws = _Workspace(min(chunk, n), min(FC_CHUNKS * chunk, n), L, k2, C, groups, low,
                        x.device, store=store)
        fc_cols = _fc_columns(fc_w_c, groups)
        out = x.new_empty(n, D)
        for block in _blocks(n, chunk):
            s0, e1 = block[0][0], block[-1][1]
            for s, e in block:
                ws.features(xl[s:e], filters, k, None if keep is None else keep[:, s:e],
                            impl, s, row0=s - s0)
            feat = ws.feat[:, :e1 - s0]
            o = out[s0:e1]
            for grp in range(groups):
                part = feat[grp].view(e1 - s0, -1)
                if low == x.dtype:
                    if grp == 0:
                        torch.addmm(fc_b, part, fc_cols[grp], out=o)
                    else:
                        o.addmm_(part, fc_cols[grp])
                else:
                    y = part @ fc_cols[grp]
                    if grp == 0:
                        o.copy_(y).add_(fc_b)
                    else:
                        o.add_(y)
        ctx.save_for_backward(x, w, b, mean, var, gamma, beta, keep, fc_w_c)
        ctx.k, ctx.groups, ctx.eps, ctx.chunk, ctx.impl = k, groups, eps, chunk, impl
        ctx.drop_scale, ctx.store = drop_scale, store
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, b, mean, var, gamma, beta, keep, fc_w_c = ctx.saved_tensors
        k, groups, eps, chunk, impl = ctx.k, ctx.groups, ctx.eps, ctx.chunk, ctx.impl
        n, C, D = x.shape[0], w.shape[0], fc_w_c.shape[0]
        low, k2 = fc_w_c.dtype, k * k
        H, W = x.shape[2], x.shape[3]
        L = (H - k + 1) * (W - k + 1)
        wv = w.view(C, -1)
        inv, scale, shift = _affine(w, b, mean, var, gamma, beta, groups, eps)
        filters = _augmented_filters(w, scale, shift, groups, low)
        sc_filters = filters[..., :k2]  # dy = scale * dz, so dcols = dz (W * scale)
        xl = x.to(low)
        ws = _Workspace(min(chunk, n), min(FC_CHUNKS * chunk, n), L, k2, C, groups, low,
                        x.device, grads=True, store=ctx.store)
        fc_parts = fc_w_c.view(D, groups, L * C)
        g_fc = torch.zeros(groups, D, L * C, dtype=x.dtype, device=x.device)
        gm = torch.zeros(groups, C, k2 + 1, dtype=x.dtype, device=x.device)
        g_x = torch.empty_like(x)
        g = g.contiguous()
        for block in _blocks(n, chunk):
            s0, e1 = block[0][0], block[-1][1]
            for s, e in block:
                m = e - s
                feat = ws.features(xl[s:e], filters, k,
                                   None if keep is None else keep[:, s:e], impl, s,
                                   row0=s - s0)
                g_c = g[s:e].to(low)
                for grp in range(groups):
                    a = feat[grp]  # kept intact for the block's weight gradient
                    da = ws.dfeat[:m]
                    torch.mm(g_c, fc_parts[:, grp], out=da)
                    cols = ws.patch_rows(xl[s:e], grp, k, s, impl)
                    dcols = ws.dcols[:m * L]
                    dz = relu_mask_backward_(a, da.view(m, L, C), impl=impl).view(m * L, C)
                    if low == x.dtype:
                        gm[grp].addmm_(dz.t(), cols)
                    else:
                        accumulate_(gm[grp], dz.t() @ cols, impl=impl)
                    torch.mm(dz, sc_filters[grp], out=dcols)
                    g_x[s:e, grp] = fold_patches(dcols, (m, H, W), k, impl=impl)
            g_blk = g[s0:e1].to(low)
            for grp in range(groups):  # dW_fc over the whole block: one longer GEMM
                a_blk = ws.feat[grp, :e1 - s0].view(e1 - s0, -1)
                if low == x.dtype:
                    g_fc[grp].addmm_(g_blk.t(), a_blk)
                else:
                    accumulate_(g_fc[grp], g_blk.t() @ a_blk, impl=impl)
        g_beta = gm[..., k2]  # sum dz, (G, C)
        gm = gm[..., :k2]  # sum dz cols^T, (G, C, k*k)
        # y = cols W^T, so sum(dz * y) = rowsum(W * gm): no y tensor needed
        dz_y = (gm * wv).sum(-1).reshape(-1)
        g_w = (gm * scale.view(groups, C, 1)).sum(0)  # dy = scale * dz
        g_beta = g_beta.reshape(-1)
        # zhat = (y + b - mean) * inv, so sum(dz * zhat) = inv * (sum(dz * y) - (mean - b)
        # * sum(dz)).
        centre = mean - (b.repeat(groups) if b is not None else 0)
        g_gamma = inv * (dz_y - centre * g_beta)
        g_mean = -g_beta * scale
        g_var = -0.5 * g_gamma * gamma / (var + eps)
        g_b = g_beta * scale if b is not None else None  # bias needs groups == 1
        if ctx.drop_scale != 1.0:
            g_fc.mul_(ctx.drop_scale)
        g_fc_w = g_fc[0] if groups == 1 else g_fc.transpose(0, 1).reshape(D, -1)
        return (g_x, g_w.view_as(w), g_b, g_mean, g_var, g_gamma, g_beta, g_fc_w, g.sum(0),
                None, None, None, None, None, None, None, None, None)


class _Moments(torch.autograd.Function):
    """Per group, the Gram matrix of the augmented patches of all images,
    ``G_g = [cols_g | 1]^T [cols_g | 1]`` ``(k*k + 1, k*k + 1)``: the second moments, the
    patch sums (last column) and the count, always accumulated and returned in ``x.dtype``
    (the variance is a difference of moments); for a bfloat16 head (``low``) of float32
    inputs the patches enter the GEMM rounded to bfloat16, as they enter the head's
    convolution (:func:`~disenkg.ops.precision.bf16_matmul`). Backward:
    ``d cols = [cols | 1] (dG + dG^T)`` folded back onto ``x`` (one GEMM per chunk; nothing
    of the forward is re-run), in the head's compute dtype ``low`` like the head's own
    input gradient."""

    @staticmethod
    def forward(ctx, x, k, groups, chunk, impl, low, store=None):
        n = x.shape[0]
        k2 = k * k
        gram = torch.zeros(groups, k2 + 1, k2 + 1, dtype=x.dtype, device=x.device)
        buf = None
        # a bfloat16 head: the Gram of its bfloat16-rounded patches, accumulated in float32
        low_gemm = (low == torch.bfloat16 and x.dtype == torch.float32
                    and x.device.type == "cpu" and bf16_matmul_supported())
        with bf16_matmul(low_gemm):
            for s, e in _chunks(n, chunk):
                for grp in range(groups):
                    c = patches(x[s:e, grp], k, out=buf, impl=impl)
                    buf = c if buf is None else buf
                    gram[grp].addmm_(c.t(), c)
        ctx.save_for_backward(x)
        ctx.k, ctx.groups, ctx.chunk, ctx.impl, ctx.low = k, groups, chunk, impl, low
        ctx.store = store
        return gram

    @staticmethod
    def backward(ctx, dgram):
        (x,) = ctx.saved_tensors
        k, groups, chunk, impl, low = ctx.k, ctx.groups, ctx.chunk, ctx.impl, ctx.low
        n, H, W = x.shape[0], x.shape[2], x.shape[3]
        sym = (dgram + dgram.transpose(1, 2)).to(low)
        store = ctx.store
        xl = x.to(low) if store is None else None
        g_x = torch.empty_like(x)
        buf = dbuf = None
        for s, e in _chunks(n, chunk):
            for grp in range(groups):
                if store is not None:
                    c = store.rows(grp, s, e)
                else:
                    c = patches(xl[s:e, grp], k, out=buf, impl=impl)
                    buf = c if buf is None else buf
                dbuf = torch.mm(c, sym[grp], out=None if dbuf is None else dbuf[:c.shape[0]])
                g_x[s:e, grp] = fold_patches(dbuf, (e - s, H, W), k, impl=impl)
        return g_x, None, None, None, None, None, None


def _fc_columns(fc_w: Tensor, groups: int) -> Tensor:
    """``(D, G * L * C)`` fc weights as ``(G, L * C, D)`` contiguous blocks: the forward
    GEMMs ``feat_g @ W_g^T`` ran ~15 % faster on this layout than on a transposed view,
    for one copy of the weights per call."""
    D = fc_w.shape[0]
    return fc_w.view(D, groups, -1).permute(1, 2, 0).contiguous()


def _fc_weight(fc: nn.Linear, groups: int, C: int, L: int) -> Tensor:
    """fc columns reordered from ``(G, C, L)`` to the ``(G, L, C)`` feature layout."""
    D = fc.weight.shape[0]
    return fc.weight.view(D, groups, C, L).transpose(2, 3).reshape(D, -1)


#: evaluation copies of fc weights, per module: (key, reordered weight in the compute dtype)
_EVAL_FC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eval_fc_weight(fc: nn.Linear, groups: int, C: int, L: int, dtype: torch.dtype
                    ) -> Tensor:
    """:func:`_fc_weight` in ``dtype`` as :func:`_fc_columns` blocks, cached across the
    batches of an evaluation (the reordered copy is as large as the weight, 64 MB at the
    FB15k-237 default). The key holds the weight's identity and version counter, which
    every in-place update (an optimiser step, ``load_state_dict``) bumps, so a stale copy
    is never used."""
    w = fc.weight
    key = (id(w), w._version, w.data_ptr(), groups, C, L, dtype)
    hit = _EVAL_FC.get(fc)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        out = _fc_columns(_fc_weight(fc, groups, C, L).to(dtype), groups)
    _EVAL_FC[fc] = (key, out)
    return out


def _eval_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
               bn: nn.BatchNorm2d, fc: nn.Linear, chunk: int, low: torch.dtype,
               impl: str) -> Tensor:
    """Evaluation mode: running-statistics BN folded into the conv GEMM, ``(G, n, L, C)``
    feature maps in chunks (no dropout)."""
    C, k = weight.shape[0], weight.shape[-1]
    L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
    _, scale, shift = _affine(weight, bias, bn.running_mean, bn.running_var, bn.weight,
                              bn.bias, groups, bn.eps)
    filters = _augmented_filters(weight, scale, shift, groups, low)
    fc_w = _eval_fc_weight(fc, groups, C, L, low)  # (G, L * C, D)
    ws = _Workspace(min(chunk, x.shape[0]), min(chunk, x.shape[0]), L, k * k, C, groups,
                    low, x.device)
    xl = x.to(low)
    out = x.new_empty(x.shape[0], fc_w.shape[-1])
    for s, e in _chunks(x.shape[0], chunk):
        feat = ws.features(xl[s:e], filters, k, None, impl, s)
        o = out[s:e]
        o.copy_(fc.bias)
        for grp in range(groups):
            o.add_(feat[grp].view(e - s, -1) @ fc_w[grp])
    return out


def conv_bn_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                 bn: nn.BatchNorm2d, drop: nn.Dropout2d, fc: nn.Linear,
                 chunk: int | None, precision: str = "fp32", impl: str = "auto") -> Tensor:
    """``fc(drop(relu(bn(conv2d(x, weight.repeat(groups), bias, groups))))).flatten(1)``.

    ``weight`` is ``(C, 1, k, k)``, shared by the ``groups`` input channels of ``x``
    ``(n, groups, H, W)``; ``bias`` (``(C,)``) requires ``groups == 1``. ``precision``
    ``"bf16"`` runs the conv and fc GEMMs, the feature maps and the GEMM of the gradient
    through the batch-norm statistics in bfloat16 (the statistics themselves, outputs and
    parameter gradients stay in ``x.dtype``); it needs ``chunk``.
    ``"auto"`` picks bfloat16 where the hardware makes it fast (:func:`compute_dtype`)
    and the input's dtype on the plain path.
    ``impl`` selects the patch kernels (:mod:`disenkg.ops.patches`).
    """
    low = compute_dtype(precision, x, chunk)
    if low != x.dtype and not chunk:
        raise ValueError("precision='bf16' needs an image chunk (image_chunk=None is the "
                         "plain full-precision path)")
    k = weight.shape[-1]
    params = (x, weight, bias, bn.weight, bn.bias, fc.weight, fc.bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                 for t in params)
    if chunk and not bn.training and not drop.training and not needs_grad:
        return _eval_head(x, weight, bias, groups, bn, fc, chunk, low, impl)
    if not (bn.training and chunk and (x.shape[0] > chunk or low != x.dtype)
            and torch.is_grad_enabled()):
        if low != x.dtype and precision != "auto":
            raise ValueError("precision='bf16' is for training with gradients or evaluation "
                             "mode without gradients")
        w = weight.repeat(groups, 1, 1, 1) if groups > 1 else weight
        y = F.conv2d(x, w, bias, groups=groups)
        return fc(drop(torch.relu(bn(y))).flatten(1))
    n = x.shape[0]
    C = weight.shape[0]
    k2 = k * k
    store = _PatchStore(x.to(low), k, impl) if low == torch.bfloat16 != x.dtype else None
    gram = _Moments.apply(x, k, groups, chunk, impl, low, store)
    L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
    M = n * L
    m = gram[:, :k2, k2] / M  # (G, k*k)
    S = gram[:, :k2, :k2] / M  # (G, k*k, k*k)
    wv = weight.view(C, -1)
    wm = m @ wv.t()  # (G, C): w_c . m_g
    ey2 = torch.einsum("ck,gkl,cl->gc", wv, S, wv)
    if bias is not None:
        mean = wm + bias
        ey2 = ey2 + 2 * bias * wm + bias * bias
    else:
        mean = wm
    var = (ey2 - mean * mean).clamp_min(0).reshape(-1)
    mean = mean.reshape(-1)
    with torch.no_grad():
        bn.num_batches_tracked += 1
        mom_ = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - mom_).add_(mean.detach(), alpha=mom_)
        bn.running_var.mul_(1 - mom_).add_(var.detach() * (M / max(M - 1, 1)), alpha=mom_)
    p = drop.p if drop.training else 0.0
    fc_w = _fc_weight(fc, groups, C, L)  # autograd maps its gradient back to fc.weight
    keep, drop_scale = None, 1.0
    if p > 0:  # Dropout2d: each (image, channel) kept with probability 1 - p
        keep = torch.rand(groups, n, C, device=x.device) < (1 - p)
        drop_scale = 1.0 / (1 - p) if p < 1 else 1.0
    # the GEMMs' copy, with the dropout rescaling folded in
    fc_w_c = (fc_w.detach() * drop_scale if drop_scale != 1.0 else fc_w.detach())
    fc_w_c = fc_w_c.to(low).contiguous()
    return _Head.apply(x, weight, bias, mean, var, bn.weight, bn.bias, fc_w, fc.bias, keep,
                       drop_scale, k, groups, bn.eps, fc_w_c, chunk, impl, store)
