r"""Memory-bounded ``fc(dropout(relu(BN(conv(x)))))`` for the convolutional scorers.

The feature maps of ConvE / InteractE are the largest activations of DisenKGAT training
(FB15k-237 default: 6144 images x 200 filters x 20 x 20 = 2 GB per tensor, several alive).
In training mode this helper processes the images in chunks whose activations are
recomputed in backward (activation checkpointing), with **exact** batch-norm statistics:

1. per-channel moments of the conv output over *all* images, from checkpointed chunks
   that return only ``(2, C)`` sums (shifted by a detached first-chunk mean for stability):
   :math:`\mu = s + S_1 / M`, :math:`\sigma^2 = S_2 / M - (S_1 / M)^2`;
2. each chunk is normalised with these (differentiable) statistics, so gradients flow
   through :math:`\mu, \sigma^2` exactly as in ``nn.BatchNorm2d``;
3. running statistics are updated as ``nn.BatchNorm2d`` does (unbiased variance).

Evaluation mode, ``chunk=None`` or small inputs use the plain sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["conv_bn_head"]


def conv_bn_head(x: Tensor, conv: Callable[[Tensor], Tensor], bn: nn.BatchNorm2d,
                 drop: nn.Module, fc: nn.Linear, chunk: int | None) -> Tensor:
    """``fc(drop(relu(bn(conv(x)))).flatten(1))``, chunked over images when training."""
    if not (bn.training and chunk and x.shape[0] > chunk and torch.is_grad_enabled()):
        return fc(drop(torch.relu(bn(conv(x)))).flatten(1))
    chunks = x.split(chunk)
    with torch.no_grad():
        y0 = conv(chunks[0])
        shift = y0.mean((0, 2, 3))
        per_image = y0.shape[2] * y0.shape[3]
        del y0

    def moments(xc: Tensor) -> Tensor:
        y = conv(xc) - shift.view(1, -1, 1, 1)
        return torch.stack([y.sum((0, 2, 3)), (y * y).sum((0, 2, 3))])

    S = sum(checkpoint(moments, xc, use_reentrant=False) for xc in chunks)
    M = x.shape[0] * per_image
    m1 = S[0] / M
    var = S[1] / M - m1 * m1
    mean = shift + m1
    with torch.no_grad():
        bn.num_batches_tracked += 1
        mom = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - mom).add_(mean.detach(), alpha=mom)
        bn.running_var.mul_(1 - mom).add_(var.detach() * (M / max(M - 1, 1)), alpha=mom)

    def head(xc: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        y = conv(xc)
        scale = (bn.weight * torch.rsqrt(var + bn.eps)).view(1, -1, 1, 1)
        z = (y - mean.view(1, -1, 1, 1)) * scale + bn.bias.view(1, -1, 1, 1)
        return fc(drop(torch.relu(z)).flatten(1))

    return torch.cat([checkpoint(head, xc, mean, var, use_reentrant=False) for xc in chunks])
