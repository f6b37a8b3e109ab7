r"""Batch norm whose training statistics cover the global batch of a data-parallel step.

Inside :func:`~disenkg.utils.distributed.sync_batch_stats` (the data-parallel trainer's
steps), :func:`batch_norm` normalises with the mean and biased variance over every rank's
rows, from one all-reduce of ``[sum x, sum x^2, count]`` per channel, and updates the running
statistics as ``nn.BatchNorm`` would on the whole batch. Backward, with
:math:`\hat x = (x - \mu)\,\sigma^{-1}` and :math:`M` the global count:

.. math::
    \partial x = \frac{\gamma}{\sigma M}\Big(M\,\partial y - \sum \partial y
        - \hat x \sum \partial y\,\hat x\Big)

where both sums run over all ranks (a second all-reduce); :math:`\partial\gamma =
\sum \partial y\,\hat x` and :math:`\partial\beta = \sum \partial y` stay local sums (the
trainer sums parameter gradients over ranks). Outside the block, or in evaluation mode, it
is the module itself. :func:`batch_norm_over` does the same over an explicit process group
in every training-mode call (the rows of an entity-sharded graph encoder, each rank holding
its shard's nodes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from disenkg.utils.distributed import batch_stats_synced, sync_group

__all__ = ["batch_norm", "batch_norm_over"]


def _channels_last(x: Tensor) -> Tensor:
    """``(n, C, ...)`` as ``(rows, C)``."""
    return x.transpose(0, 1).reshape(x.shape[1], -1).t() if x.dim() > 2 else x


class _SyncBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor,
                bn: nn.modules.batchnorm._BatchNorm, group: Any) -> Tensor:
        rows = _channels_last(x)
        C, n = rows.shape[1], float(rows.shape[0])
        # this rank's sums from its own mean and variance: no (rows, C) temporary
        var_r, mean_r = torch.var_mean(rows, dim=0, correction=0)
        stats = torch.cat([mean_r * n, (var_r + mean_r * mean_r) * n, rows.new_tensor([n])])
        dist.all_reduce(stats, group=group)
        count = float(stats[-1])
        mean = stats[:C] / count
        var = (stats[C:2 * C] / count - mean * mean).clamp_min(0)
        inv = torch.rsqrt(var + bn.eps)
        shape = (1, C) + (1,) * (x.dim() - 2)
        xhat = torch.sub(x, mean.view(shape)).mul_(inv.view(shape))
        with torch.no_grad():  # nn.BatchNorm's update, over the global batch
            bn.num_batches_tracked += 1
            mom = bn.momentum if bn.momentum is not None else \
                1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - mom).add_(mean, alpha=mom)
            bn.running_var.mul_(1 - mom).add_(var * (count / max(count - 1, 1)), alpha=mom)
        ctx.save_for_backward(xhat, gamma, inv)
        ctx.count, ctx.group = count, group
        # one output tensor, no (x * gamma) temporary beside it
        return torch.addcmul(beta.view(shape), xhat, gamma.view(shape))

    @staticmethod
    def backward(ctx, dy: Tensor):
        xhat, gamma, inv = ctx.saved_tensors
        C = xhat.shape[1]
        shape = (1, C) + (1,) * (xhat.dim() - 2)
        dy_rows, xhat_rows = _channels_last(dy), _channels_last(xhat)
        g_beta = dy_rows.sum(0)
        g_gamma = (dy_rows * xhat_rows).sum(0)
        sums = torch.cat([g_beta, g_gamma])
        dist.all_reduce(sums, group=ctx.group)
        M = ctx.count
        # (gamma inv / M) (M dy - sum dy - xhat sum dy xhat), built in one tensor
        dx = xhat * sums[C:].view(shape).neg()
        dx.add_(dy, alpha=M).sub_(sums[:C].view(shape)).mul_((gamma * inv).view(shape) / M)
        return dx, g_gamma, g_beta, None, None


def batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``bn(x)``, with the global batch's statistics in a synchronised training step."""
    if not (bn.training and batch_stats_synced()):
        return bn(x)
    return _SyncBN.apply(x, bn.weight, bn.bias, bn, sync_group())


def batch_norm_over(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, group: Any) -> Tensor:
    """``bn(x)`` in evaluation mode; in training mode normalised with the statistics of the
    rows of every rank of ``group`` (``None``: all ranks), whose running statistics it
    updates alike on every rank."""
    if not bn.training:
        return bn(x)
    return _SyncBN.apply(x, bn.weight, bn.bias, bn, group)
