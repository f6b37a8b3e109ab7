r"""Memory-bounded ``fc(dropout2d(relu(BN(conv(x)))))`` for the convolutional scorers.

The feature maps of ConvE / InteractE are the largest activations of DisenKGAT training
(FB15k-237 default: 6144 images x 200 filters x 20 x 20 = 2 GB per tensor, several alive).
In training mode :func:`conv_bn_head` processes the images in chunks and keeps only each
chunk's input (and dropout mask) for backward, with **exact** batch-norm semantics:

* the convolution is an im2col GEMM, :math:`y_{g} = W\,\mathrm{cols}_g + b` per group
  ``g`` (filters shared by the groups, as InteractE's repeated filter bank);
* batch-norm statistics over *all* images follow from the patch moments
  :math:`m_g = \overline{\mathrm{cols}_g}` and :math:`S_g = \overline{\mathrm{cols}_g
  \mathrm{cols}_g^\top}` (``k^2 x k^2``):
  :math:`\mu_{gc} = w_c^\top m_g + b_c`,
  :math:`\sigma^2_{gc} = w_c^\top S_g w_c + 2 b_c w_c^\top m_g + b_c^2 - \mu_{gc}^2`;
  they are differentiable, so gradients flow through the statistics as in
  ``nn.BatchNorm2d`` (per chunk, the moments' backward is one GEMM on recomputed patches);
* each chunk runs in :class:`_HeadChunk`, whose backward recomputes the chunk's feature
  maps once (the fc forward is not repeated) and applies the chain rule by hand::

      a = drop(relu(z)),  z = gamma * zhat + beta,  zhat = (y - mu) / sqrt(var + eps)
      dW_fc = g^T a,  da = g W_fc,  dz = da * mask * [z > 0]
      dgamma = sum dz * zhat,  dbeta = sum dz,  dy = dz * gamma / sqrt(var + eps)
      dmu = -sum dy,  dvar = -1/2 sum dz * gamma * zhat / (var + eps)
      dW = sum dy cols^T,  db = sum dy,  dcols = W^T dy -> fold -> dx

  with BN and the conv bias folded into one per-channel ``scale * y + shift`` (one pass),
  feature maps laid out ``(n, G, L, C)`` (position-major, channel last) so that the
  convolution, its two gradients and the fc are plain GEMMs without layout copies,
  ``sum dz * zhat`` taken as ``inv * (sum dz * y - (mu - b) * sum dz)`` (no ``zhat``
  tensor), and ``a > 0`` standing for ``[z > 0] * [kept by dropout]``.

Evaluation mode (with ``chunk``) runs the same GEMM layout with the running statistics
folded into the conv epilogue; ``chunk=None`` or small training inputs use ``F.conv2d`` and
the plain modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PRECISIONS", "conv_bn_head"]

#: compute dtypes of the head's GEMMs and feature maps (``None``: the input's dtype)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def _patches(x: Tensor, k: int) -> Tensor:
    """im2col in "channels last" order: ``(n, G, H, W)`` -> ``(n * G * L, k * k)``, one
    row per output position, so the convolution is a single GEMM with no layout copies."""
    n, G, H, W = x.shape
    return x.unfold(2, k, 1).unfold(3, k, 1).reshape(n * G * (H - k + 1) * (W - k + 1), k * k)


def _group_patches(x: Tensor, k: int, grp: int, groups: int) -> Tensor:
    """:func:`_patches` of input channel ``grp``: ``(n * L, k * k)``."""
    return _patches(x if groups == 1 else x[:, grp:grp + 1], k)


def _fold(g_cols: Tensor, shape: torch.Size, k: int) -> Tensor:
    """Adjoint of :func:`_patches`: ``(n * G * L, k * k)`` -> ``(n, G, H, W)``."""
    n, G, H, W = shape
    L = (H - k + 1) * (W - k + 1)
    g = g_cols.view(n, G, L, k * k).transpose(2, 3).reshape(n, G * k * k, L)
    return F.fold(g, (H, W), k)


class _HeadChunk(torch.autograd.Function):
    """One chunk of the head. Feature maps live as ``(n, G, L, C)`` (position-major, channel
    last); ``fc_w`` arrives with its columns in that order (see :func:`conv_bn_head`)."""

    @staticmethod
    def _affine(w, b, mean, var, gamma, beta, groups, eps):
        """BN (+ conv bias) folded into one per-channel ``scale`` and ``shift``."""
        inv = torch.rsqrt(var + eps)
        scale = gamma * inv
        shift = beta - mean * scale
        if b is not None:
            shift = shift + b.repeat(groups) * scale
        return inv, scale, shift

    @staticmethod
    def forward(ctx, x, w, b, mean, var, gamma, beta, fc_w, fc_b, mask, k, groups, eps,
                fc_w_c):
        # fc_w receives the gradient; fc_w_c is the copy the GEMMs use (fc_w itself, or
        # bfloat16), whose dtype the feature maps share (fp32 statistics, outputs, grads).
        low = fc_w_c.dtype
        _, scale, shift = _HeadChunk._affine(w, b, mean, var, gamma, beta, groups, eps)
        a = _conv_affine_relu(x, w, scale, shift, k, groups, low)[1]
        if mask is not None:
            a = a.mul_(mask.to(low).view(x.shape[0], groups, 1, -1))
        out = torch.addmm(fc_b.to(low), a.view(x.shape[0], -1), fc_w_c.t()).to(x.dtype)
        ctx.save_for_backward(x, w, b, mean, var, gamma, beta, mask, fc_w_c)
        ctx.k, ctx.groups, ctx.eps = k, groups, eps
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, b, mean, var, gamma, beta, mask, fc_w_c = ctx.saved_tensors
        k, groups, eps = ctx.k, ctx.groups, ctx.eps
        n, C = x.shape[0], w.shape[0]
        low = fc_w_c.dtype
        wv = w.view(C, -1)
        inv, scale, shift = _HeadChunk._affine(w, b, mean, var, gamma, beta, groups, eps)
        cols, a = _conv_affine_relu(x, w, scale, shift, k, groups, low)
        mask = mask.to(low).view(n, groups, 1, C) if mask is not None else None
        if mask is not None:
            a = a.mul_(mask)
        g_low = g.to(low)
        g_fc_w = (g_low.t() @ a.view(n, -1)).to(x.dtype)
        g_fc_b = g.sum(0)
        # a >= 0, and a > 0 <=> z > 0 and kept by dropout: sign(a) is that indicator
        # (in place, no bool tensor to promote).
        gate = a.sign_()
        if mask is not None:
            gate = gate.mul_(mask)
        dz = (g_low @ fc_w_c).view_as(gate).mul_(gate)
        del a, gate
        g_beta = dz.sum((0, 2), dtype=x.dtype)  # (G, C)
        dz_y = torch.empty_like(g_beta)
        sc = scale.view(groups, C)
        g_w = torch.zeros_like(wv)
        g_x = torch.empty_like(x) if groups > 1 else None
        for grp in range(groups):
            dzg = dz[:, grp].reshape(-1, C)  # a view when groups == 1
            gm = (dzg.t() @ cols[grp]).to(x.dtype)  # sum over positions of dz c^T, (C, k*k)
            # y = cols W^T, so sum(dz * y) = rowsum(W * gm): no y tensor needed
            dz_y[grp] = (gm * wv).sum(1)
            g_w += gm * sc[grp].unsqueeze(1)  # dy = scale * dz
            g_cols = (dzg @ (wv * sc[grp].unsqueeze(1)).to(low)).to(x.dtype)
            g_xg = _fold(g_cols, (n, 1, *x.shape[2:]), k)
            if groups == 1:
                g_x = g_xg
            else:
                g_x[:, grp:grp + 1] = g_xg
        g_beta, dz_y = g_beta.reshape(-1), dz_y.reshape(-1)
        # zhat = (y + b - mean) * inv, so sum(dz * zhat) = inv * (sum(dz * y) - (mean - b)
        # * sum(dz)).
        centre = mean - (b.repeat(groups) if b is not None else 0)
        g_gamma = inv * (dz_y - centre * g_beta)
        g_mean = -g_beta * scale
        g_var = -0.5 * g_gamma * gamma / (var + eps)
        g_b = g_beta * scale if b is not None else None  # bias needs groups == 1
        return (g_x, g_w.view_as(w), g_b, g_mean, g_var, g_gamma, g_beta, g_fc_w, g_fc_b,
                None, None, None, None, None)


def _conv_affine_relu(x: Tensor, w: Tensor, scale: Tensor, shift: Tensor, k: int,
                      groups: int, dtype: torch.dtype | None = None
                      ) -> tuple[list[Tensor], Tensor]:
    """``relu(scale * conv(x) + shift)`` as ``(n, G, L, C)`` with the per-channel scale
    folded into the filters and the shift as the GEMM bias (one pass, no ``y`` tensor);
    also returns each group's patches ``(n * L, k * k)``. ``dtype`` is the compute dtype
    of the GEMM and the outputs (default: ``x.dtype``)."""
    n, C = x.shape[0], w.shape[0]
    dtype = dtype or x.dtype
    x = x.to(dtype)
    wv = w.view(C, -1)
    sc, sh = scale.view(groups, C), shift.view(groups, C)
    cols, out = [], None
    for grp in range(groups):
        c = _group_patches(x, k, grp, groups)
        z = torch.addmm(sh[grp].to(dtype), c,
                        (wv * sc[grp].unsqueeze(1)).to(dtype).t()).view(n, -1, C)
        cols.append(c)
        if groups == 1:
            out = z.unsqueeze(1)
        else:
            if out is None:
                out = z.new_empty(n, groups, z.shape[1], C)
            out[:, grp] = z
    return cols, out.relu_()


def _moments(x: Tensor, k: int, groups: int) -> Tensor:
    """Per group: ``[sum cols | sum cols cols^T]`` as ``(G, k*k, 1 + k*k)``."""
    out = []
    for grp in range(groups):
        c = _group_patches(x, k, grp, groups)
        out.append(torch.cat([c.sum(0).unsqueeze(-1), c.t() @ c], dim=-1))
    return torch.stack(out)


class _Moments(torch.autograd.Function):
    """:func:`_moments` with a direct backward: for ``M = [s1 | S]``,
    ``d cols = 1 ds1^T + cols (dS + dS^T)``, folded back onto ``x`` (one GEMM; nothing of
    the forward is re-run)."""

    @staticmethod
    def forward(ctx, x, k, groups):
        ctx.save_for_backward(x)
        ctx.k, ctx.groups = k, groups
        return _moments(x, k, groups)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        k, groups = ctx.k, ctx.groups
        shape = (x.shape[0], 1, *x.shape[2:])
        parts = []
        for grp in range(groups):
            cols = _group_patches(x, k, grp, groups)
            dS = g[grp, :, 1:]
            dcols = torch.addmm(g[grp, :, 0].unsqueeze(0), cols, dS + dS.t())
            parts.append(_fold(dcols, shape, k))
        return (parts[0] if groups == 1 else torch.cat(parts, dim=1)), None, None


def _fc_weight(fc: nn.Linear, groups: int, C: int, L: int) -> Tensor:
    """fc columns reordered from ``(G, C, L)`` to the ``(G, L, C)`` feature layout."""
    D = fc.weight.shape[0]
    return fc.weight.view(D, groups, C, L).transpose(2, 3).reshape(D, -1)


def _eval_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
               bn: nn.BatchNorm2d, fc: nn.Linear, chunk: int, low: torch.dtype) -> Tensor:
    """Evaluation mode: running-statistics BN folded into the conv GEMM's epilogue,
    ``(n, G, L, C)`` feature maps in chunks (no dropout)."""
    C, k = weight.shape[0], weight.shape[-1]
    L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
    _, scale, shift = _HeadChunk._affine(weight, bias, bn.running_mean, bn.running_var,
                                         bn.weight, bn.bias, groups, bn.eps)
    fc_w, fc_b = _fc_weight(fc, groups, C, L).to(low), fc.bias.to(low)
    outs = []
    for xc in x.split(chunk):
        a = _conv_affine_relu(xc, weight, scale, shift, k, groups, low)[1]
        outs.append(torch.addmm(fc_b, a.view(xc.shape[0], -1), fc_w.t()).to(x.dtype))
    return torch.cat(outs)


def conv_bn_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                 bn: nn.BatchNorm2d, drop: nn.Dropout2d, fc: nn.Linear,
                 chunk: int | None, precision: str = "fp32") -> Tensor:
    """``fc(drop(relu(bn(conv2d(x, weight.repeat(groups), bias, groups))))).flatten(1)``.

    ``weight`` is ``(C, 1, k, k)``, shared by the ``groups`` input channels of ``x``
    ``(n, groups, H, W)``; ``bias`` (``(C,)``) requires ``groups == 1``. ``precision``
    ``"bf16"`` runs the conv and fc GEMMs and the feature maps in bfloat16 (batch-norm
    statistics, outputs and parameter gradients stay in ``x.dtype``); it needs ``chunk``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    low = PRECISIONS[precision] or x.dtype
    if low != x.dtype and not chunk:
        raise ValueError("precision='bf16' needs an image chunk (image_chunk=None is the "
                         "plain full-precision path)")
    k = weight.shape[-1]
    if chunk and not bn.training and not drop.training:
        return _eval_head(x, weight, bias, groups, bn, fc, chunk, low)
    if not (bn.training and chunk and (x.shape[0] > chunk or low != x.dtype)
            and torch.is_grad_enabled()):
        if low != x.dtype:
            raise ValueError("precision='bf16' is for training with gradients or evaluation "
                             "mode")
        w = weight.repeat(groups, 1, 1, 1) if groups > 1 else weight
        y = F.conv2d(x, w, bias, groups=groups)
        return fc(drop(torch.relu(bn(y))).flatten(1))
    n = x.shape[0]
    C = weight.shape[0]
    chunks = x.split(chunk)
    mom = sum(_Moments.apply(xc, k, groups) for xc in chunks)
    L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
    M = n * L
    m = mom[..., 0] / M  # (G, k*k)
    S = mom[..., 1:] / M  # (G, k*k, k*k)
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
    fc_w_c = fc_w.detach().to(low)  # the compute copy (no copy when low == x.dtype)
    outs = []
    for xc in chunks:
        mask = None
        if p > 0:
            keep = torch.empty(xc.shape[0], groups * C, dtype=x.dtype, device=x.device)
            mask = keep.bernoulli_(1 - p).div_(1 - p) if p < 1 else keep.zero_()
        outs.append(_HeadChunk.apply(xc, weight, bias, mean, var, bn.weight, bn.bias,
                                     fc_w, fc.bias, mask, k, groups, bn.eps, fc_w_c))
    return torch.cat(outs)
