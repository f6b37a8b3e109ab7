r"""Materialising reference of the mixture BCE: plain, obviously correct, (B, K, N) in memory.

This is the definition the other implementations are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from disenkg.ops.mixture_bce.inputs import Target

__all__ = ["reference_loss"]


def reference_loss(
    query: Tensor,
    entity: Tensor,
    att_logits: Tensor,
    bias: Tensor | None,
    target: Target,
    order: str,
) -> Tensor:
    r"""Element-wise loss ``(B, N)``.

    .. math::
        x_{bkn} = \langle q_{bk}, e_{nk} \rangle + \beta_n,\qquad a_b = \mathrm{softmax}(\theta_b)

    ``after``: :math:`\log p = \mathrm{LSE}_k(\log a_k + \log\sigma(x_k))`,
    :math:`\log(1-p) = \mathrm{LSE}_k(\log a_k + \log\sigma(-x_k))`,
    :math:`\ell = -(t \log p + (1-t)\log(1-p))`.
    ``before``: :math:`\ell = \mathrm{BCEWithLogits}(\sum_k a_k x_k, t)`.
    """
    x = torch.einsum("bkf,nkf->bkn", query, entity)
    if bias is not None:
        x = x + bias
    t = dense_target(target, x.dtype)
    if order == "before":
        z = (torch.softmax(att_logits, -1).unsqueeze(-1) * x).sum(1)
        return F.binary_cross_entropy_with_logits(z, t, reduction="none")
    loga = torch.log_softmax(att_logits, -1).unsqueeze(-1)
    log_p = torch.logsumexp(loga + F.logsigmoid(x), dim=1)
    log_q = torch.logsumexp(loga + F.logsigmoid(-x), dim=1)
    return -(t * log_p + (1 - t) * log_q)


def dense_target(target: Target, dtype: torch.dtype) -> Tensor:
    """The (B, N) smoothed target matrix (materialised: reference and tests only)."""
    if target.dense is not None:
        return target.dense.to(dtype)
    t = torch.full(
        (target.num_rows, target.num_cols), target.t0, dtype=dtype,
        device=target.rows.device,
    )
    t[target.rows, target.cols] = target.t1
    return t
