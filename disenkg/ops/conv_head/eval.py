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
              impl: str) -> Tensor:
    """The head of a module in evaluation mode, ``chunk`` images at a time, its GEMMs in
    ``low``; ``(n, G, H, W) -> (n, D)`` in ``x.dtype``."""
    C, k = weight.shape[0], weight.shape[-1]
    L = (x.shape[2] - k + 1) * (x.shape[3] - k + 1)
    _, scale, shift = affine(weight, bias, bn.running_mean, bn.running_var, bn.weight,
                             bn.bias, groups, bn.eps)
    filters = augmented_filters(weight, scale, shift, groups, low)
    fc_w = eval_fc_columns(fc, groups, C, L, low)  # (G, L * C, D)
    ws = Workspace(min(chunk, x.shape[0]), min(chunk, x.shape[0]), L, k * k, C, groups,
                   low, x.device)
    xl = x.to(low)
    out = x.new_empty(x.shape[0], fc_w.shape[-1])
    for s, e in chunks(x.shape[0], chunk):
        feat = ws.features(xl[s:e], filters, k, None, impl, s)
        o = out[s:e]
        o.copy_(fc.bias)
        for grp in range(groups):
            f = feat[grp].view(e - s, -1)
            if f.dtype == o.dtype:  # accumulated by the GEMM (no product buffer)
                o.addmm_(f, fc_w[grp])
            else:
                o.add_(f @ fc_w[grp])
    return out
