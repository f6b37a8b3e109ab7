"""Evaluation mode without gradients: running-statistics batch norm folded into the conv
GEMM, ``(G, n, L, C)`` feature maps chunk by chunk, no dropout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.ops.conv_head.buffers import Workspace, chunks
from disenkg.ops.conv_head.layout import affine, augmented_filters, eval_fc_columns

__all__ = ["eval_head"]


def eval_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
              bn: nn.BatchNorm2d, fc: nn.Linear, chunk: int, low: torch.dtype,
              impl: str, *, rows: tuple[int, int] | None = None,
              fc_bias: bool = True) -> Tensor:
    """The head of a module in evaluation mode, ``chunk`` images at a time, its GEMMs in
    ``low``; ``(n, G, H, W) -> (n, D)`` in ``x.dtype``.

    ``rows=(r0, r1)``: ``x`` is the band of input rows that produces the feature-map rows
    ``r0 .. r1 - 1`` of the full image, and only the fc columns of those rows are applied
    (the head is linear after the ReLU, so the bands' outputs add up to the whole image's);
    ``fc_bias=False`` leaves the fc bias out."""
    C, k = weight.shape[0], weight.shape[-1]
    W_out = x.shape[3] - k + 1
    L = (x.shape[2] - k + 1) * W_out
    _, scale, shift = affine(weight, bias, bn.running_mean, bn.running_var, bn.weight,
                             bn.bias, groups, bn.eps)
    filters = augmented_filters(weight, scale, shift, groups, low)
    full_L = fc.in_features // (groups * C)
    fc_w = eval_fc_columns(fc, groups, C, full_L, low)  # (G, full_L * C, D)
    if rows is not None:
        if (rows[1] - rows[0]) * W_out != L:
            raise ValueError(f"an input band of {x.shape[2]} rows gives {L // W_out} "
                             f"feature-map rows, not rows {rows[0]}..{rows[1] - 1}")
        fc_w = fc_w[:, rows[0] * W_out * C:rows[1] * W_out * C]
    ws = Workspace(min(chunk, x.shape[0]), min(chunk, x.shape[0]), L, k * k, C, groups,
                   low, x.device)
    xl = x.to(low)
    out = x.new_empty(x.shape[0], fc_w.shape[-1])
    for s, e in chunks(x.shape[0], chunk):
        feat = ws.features(xl[s:e], filters, k, None, impl, s)
        o = out[s:e]
        if fc_bias:
            o.copy_(fc.bias)
        else:
            o.zero_()
        for grp in range(groups):
            f = feat[grp].view(e - s, -1)
            if f.dtype == o.dtype:  # accumulated by the GEMM (no product buffer)
                o.addmm_(f, fc_w[grp])
            else:
                o.add_(f @ fc_w[grp])
    return out
