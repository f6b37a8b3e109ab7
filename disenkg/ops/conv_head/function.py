r"""The autograd Functions of the chunked conv head: :class:`ConvHeadFunction` (all chunks
given the batch statistics) and :class:`PatchMoments` (the statistics' patch moments).

:class:`ConvHeadFunction`'s backward recomputes each chunk's feature maps once (the fc
forward is not repeated) and applies the chain rule by hand::

    a = drop(relu(z)),  z = gamma * zhat + beta,  zhat = (y - mu) / sqrt(var + eps)
    dW_fc = g^T a,  da = g W_fc,  dz = da * mask * [z > 0]   (mask: 0 or 1 / (1 - p))
    dgamma = sum dz * zhat,  dbeta = sum dz,  dy = dz * gamma / sqrt(var + eps)
    dmu = -sum dy,  dvar = -1/2 sum dz * gamma * zhat / (var + eps)
    dW = sum dy cols^T,  db = sum dy,  dcols = W^T dy -> fold -> dx

with BN and the conv bias folded into one per-channel ``scale * y + shift``
(:func:`~disenkg.ops.conv_head.layout.affine`), ``[sum dz cols^T | sum dz]`` as one GEMM
with the augmented patches, ``sum dz * zhat`` taken as ``inv * (sum dz * y - (mu - b) *
sum dz)`` (no ``zhat`` tensor), dropout as a 0/1 channel mask with its ``1 / (1 - p)``
folded into the fc weights' compute copy, and ``a > 0`` standing for ``mask * [z > 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from disenkg.ops.conv_head import buffers
from disenkg.ops.conv_head.buffers import PatchStore, Workspace, add_tn_, blocks, column_mm, tiles
from disenkg.ops.conv_head.layout import affine, augmented_filters, fc_columns
from disenkg.ops.patches import accumulate_, fold_patches, patches, positions, relu_mask_backward_
from disenkg.ops.precision import bf16_matmul, bf16_matmul_supported
from disenkg.utils.distributed import all_reduce_sum

__all__ = ["ConvHeadFunction", "HeadPlan", "PatchMoments"]


@dataclass(frozen=True)
class HeadPlan:
    """Everything :class:`ConvHeadFunction` needs besides its differentiable inputs.

    Args:
        kernel_size (int): k of the square filters.
        groups (int): G, input channels sharing the filter bank.
        eps (float): batch norm's epsilon.
        chunk (int): images per chunk.
        impl (str): the patch kernels' ``impl`` (:data:`disenkg.ops.native.IMPLS`).
        fc_compute (Tensor): the fc weight ``(D, G * L * C)`` in the ``(G, L, C)`` column
            order, in the compute dtype (which the feature maps share), times dropout's
            ``1 / (1 - p)``; detached (the GEMMs' copy; the gradient goes to ``fc_w``).
        keep (Tensor, optional): dropout's boolean channel mask ``(G, n, C)``.
        drop_scale (float): dropout's ``1 / (1 - p)`` (``1.0`` without dropout).
        store (PatchStore, optional): the patches of all images, shared by forward and
            backward (bfloat16 heads).
    """

    kernel_size: int
    groups: int
    eps: float
    chunk: int
    impl: str
    fc_compute: Tensor
    keep: Tensor | None = None
    drop_scale: float = 1.0
    store: PatchStore | None = None


class ConvHeadFunction(torch.autograd.Function):
    """``fc(drop(relu(BN(conv(x)))))`` over all chunks given the batch statistics ``mean`` /
    ``var`` ``(G * C,)``. ``fc_w`` arrives with its columns in the ``(G, L, C)`` feature
    order (:func:`~disenkg.ops.conv_head.layout.fc_weight`); with ``a`` the 0/1-masked
    maps, ``fc(drop(relu(z))) = a (fc_w / (1 - p))^T``, ``dW_fc = g^T a / (1 - p)`` and
    ``dz = (g fc_compute) * [a > 0]``.

    Shapes:
        x ``(n, G, H, W)``, w ``(C, 1, k, k)``, b ``(C,)`` or ``None`` (needs ``G == 1``),
        gamma / beta ``(G * C,)``, fc_w ``(D, G * L * C)``, fc_b ``(D,)`` -> ``(n, D)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, mean: Tensor, var: Tensor,
                gamma: Tensor, beta: Tensor, fc_w: Tensor, fc_b: Tensor, plan: HeadPlan
                ) -> Tensor:
        # fp32 statistics, outputs and grads; the GEMMs in fc_compute's dtype
        k, groups, chunk, impl = plan.kernel_size, plan.groups, plan.chunk, plan.impl
        fc_w_c = plan.fc_compute
        low = fc_w_c.dtype
        n, C, D = x.shape[0], w.shape[0], fc_w.shape[0]
        L = positions(x, k)
        _, scale, shift = affine(w, b, mean, var, gamma, beta, groups, plan.eps)
        filters = augmented_filters(w, scale, shift, groups, low)
        xl = x.to(low)
        ws = Workspace(min(chunk, n), min(buffers.FC_CHUNKS * chunk, n), L, k * k, C,
                       groups, low, x.device, store=plan.store)
        fc_cols = fc_columns(fc_w_c, groups)
        out = x.new_empty(n, D)
        for block in blocks(n, chunk):
            s0, e1 = block[0][0], block[-1][1]
            for s, e in block:
                ws.features(xl[s:e], filters, k,
                            None if plan.keep is None else plan.keep[:, s:e], impl, s,
                            row0=s - s0)
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
        ctx.save_for_backward(x, w, b, mean, var, gamma, beta)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w, b, mean, var, gamma, beta = ctx.saved_tensors
        plan = ctx.plan
        k, groups, eps, chunk, impl = (plan.kernel_size, plan.groups, plan.eps, plan.chunk,
                                       plan.impl)
        fc_w_c, keep = plan.fc_compute, plan.keep
        n, C, D = x.shape[0], w.shape[0], fc_w_c.shape[0]
        low, k2 = fc_w_c.dtype, k * k
        H, W = x.shape[2], x.shape[3]
        L = positions(x, k)
        wv = w.view(C, -1)
        inv, scale, shift = affine(w, b, mean, var, gamma, beta, groups, eps)
        filters = augmented_filters(w, scale, shift, groups, low)
        sc_filters = filters[..., :k2]  # dy = scale * dz, so dcols = dz (W * scale)
        xl = x.to(low)
        ws = Workspace(min(chunk, n), min(buffers.FC_CHUNKS * chunk, n), L, k2, C, groups,
                       low, x.device, grads=True, store=plan.store)
        fc_parts = fc_w_c.view(D, groups, L * C)
        g_fc = torch.zeros(groups, D, L * C, dtype=x.dtype, device=x.device)
        gm = torch.zeros(groups, C, k2 + 1, dtype=x.dtype, device=x.device)
        g_x = torch.empty_like(x)
        g = g.contiguous()
        # a bfloat16 head's fc weight gradient per block, before its float32 accumulation
        fc_low = (torch.empty(D, L * C, dtype=low, device=x.device) if low != x.dtype
                  else None)
        for block in blocks(n, chunk):
            s0, e1 = block[0][0], block[-1][1]
            for s, e in block:
                m = e - s
                g_c = g[s:e].to(low)
                for grp in range(groups):
                    da = ws.dfeat[:m]
                    column_mm(g_c, fc_parts[:, grp], da)
                    for ts, te in tiles(m, L, low, x.device):  # recompute a tile's maps,
                        t = te - ts  # then its gradients
                        cols = ws.feature_tile(
                            xl[s + ts:s + te], grp, filters, k,
                            None if keep is None else keep[grp, s + ts:s + te], impl,
                            s + ts, s - s0 + ts)
                        a = ws.feat[grp, s - s0 + ts:s - s0 + te]  # kept for dW_fc
                        dz = relu_mask_backward_(a, da[ts:te].view(t, L, C),
                                                 impl=impl).view(t * L, C)
                        add_tn_(gm[grp], dz, cols)
                        dcols = ws.dcols[:t * L]
                        torch.mm(dz, sc_filters[grp], out=dcols)
                        g_x[s + ts:s + te, grp] = fold_patches(dcols, (t, H, W), k,
                                                               impl=impl)
            g_blk = g[s0:e1].to(low)
            for grp in range(groups):  # dW_fc over the whole block: one longer GEMM
                a_blk = ws.feat[grp, :e1 - s0].view(e1 - s0, -1)
                if low == x.dtype:
                    column_mm(g_blk.t(), a_blk, g_fc[grp], accumulate=True)
                else:
                    accumulate_(g_fc[grp], torch.mm(g_blk.t(), a_blk, out=fc_low), impl=impl)
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
        if plan.drop_scale != 1.0:
            g_fc.mul_(plan.drop_scale)
        g_fc_w = g_fc[0] if groups == 1 else g_fc.transpose(0, 1).reshape(D, -1)
        return (g_x, g_w.view_as(w), g_b, g_mean, g_var, g_gamma, g_beta, g_fc_w, g.sum(0),
                None)


class PatchMoments(torch.autograd.Function):
    r"""Per group, the Gram matrix of the augmented patches of all images,
    :math:`G_g = [\mathrm{cols}_g \,|\, 1]^\top [\mathrm{cols}_g \,|\, 1]`
    ``(k*k + 1, k*k + 1)``: the second moments, the patch sums (last column) and the count,
    always accumulated and returned in ``x.dtype`` (the variance is a difference of
    moments); for a bfloat16 head (``low``) of float32 inputs the patches enter the GEMM
    rounded to bfloat16, as they enter the head's convolution
    (:func:`~disenkg.ops.precision.bf16_matmul`). Backward:
    :math:`d\,\mathrm{cols} = [\mathrm{cols} \,|\, 1] (dG + dG^\top)` folded back onto
    ``x`` (one GEMM per cache tile, :func:`~disenkg.ops.conv_head.buffers.tiles`; nothing
    of the forward is re-run), in the head's compute
    dtype ``low`` like the head's own input gradient.

    Shapes:
        x ``(n, G, H, W)`` -> ``(G, k*k + 1, k*k + 1)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, k: int, groups: int, impl: str,
                low: torch.dtype, store: PatchStore | None = None,
                sync: bool = False) -> Tensor:
        n = x.shape[0]
        k2 = k * k
        gram = torch.zeros(groups, k2 + 1, k2 + 1, dtype=x.dtype, device=x.device)
        buf = None
        # a bfloat16 head: the Gram of its bfloat16-rounded patches, accumulated in float32
        low_gemm = (low == torch.bfloat16 and x.dtype == torch.float32
                    and x.device.type == "cpu" and bf16_matmul_supported())
        L = positions(x, k)
        with bf16_matmul(low_gemm):
            for s, e in tiles(n, L, low, x.device):  # a cache tile's patches, their Gram
                for grp in range(groups):
                    c = patches(x[s:e, grp], k, out=buf, impl=impl)
                    buf = c if buf is None else buf
                    add_tn_(gram[grp], c, c)
        if sync:  # the global batch's moments (a data-parallel step)
            all_reduce_sum(gram)
        ctx.save_for_backward(x)
        ctx.k, ctx.groups, ctx.impl, ctx.low = k, groups, impl, low
        ctx.store, ctx.sync = store, sync
        return gram

    @staticmethod
    def backward(ctx, dgram: Tensor):
        (x,) = ctx.saved_tensors
        k, groups, impl, low = ctx.k, ctx.groups, ctx.impl, ctx.low
        n, H, W = x.shape[0], x.shape[2], x.shape[3]
        if ctx.sync:  # every rank's loss depends on the summed moments
            dgram = all_reduce_sum(dgram.clone())
        sym = (dgram + dgram.transpose(1, 2)).to(low)
        store = ctx.store
        xl = x.to(low) if store is None else None
        g_x = torch.empty_like(x)
        buf = dbuf = None
        for s, e in tiles(n, positions(x, k), low, x.device):
            for grp in range(groups):
                if store is not None:
                    c = store.rows(grp, s, e)
                else:
                    c = patches(xl[s:e, grp], k, out=buf, impl=impl)
                    buf = c if buf is None else buf
                dbuf = torch.mm(c, sym[grp], out=None if dbuf is None else dbuf[:c.shape[0]])
                g_x[s:e, grp] = fold_patches(dbuf, (e - s, H, W), k, impl=impl)
        return g_x, None, None, None, None, None, None
