r"""Ranking scores of a K-component mixture (evaluation; no loss).

.. math::
    \text{after: } \log p_{bn} = \mathrm{LSE}_k(\log a_{bk} + \log\sigma(x_{bkn})),\qquad
    \text{before: } z_{bn} = \textstyle\sum_k a_{bk} x_{bkn}

Both are monotone in the model's probability, so ranks are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mixture_scores"]


def mixture_scores(query: Tensor, entity: Tensor, att_logits: Tensor, bias: Tensor | None,
                   order: str = "after") -> Tensor:
    """``(B, N)`` scores from ``query (B, K, F)``, ``entity (N, K, F)``, ``att (B, K)``."""
    B, K, Fd = query.shape
    N = entity.shape[0]
    if order == "before" or K == 1:
        q = query if K == 1 else torch.softmax(att_logits, -1).unsqueeze(-1) * query
        e = entity.reshape(N, K * Fd).T
        q = q.reshape(B, K * Fd)
        return q @ e if bias is None else torch.addmm(bias, q, e)  # bias in the GEMM
    if order != "after":
        raise ValueError(f"unknown order {order!r}; choose one of ['after', 'before']")
    # (K, B, N) logits from one batched GEMM, then log-sum-exp over K with in-place
    # passes (the (B, N) result is all that is kept).
    x = torch.bmm(query.transpose(0, 1), entity.permute(1, 2, 0))
    if bias is not None:
        x.add_(bias)
    l = F.logsigmoid(x)
    del x
    l.add_(torch.log_softmax(att_logits, -1).t().unsqueeze(-1))
    m = l.amax(0)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
    return l.sub_(m).exp_().sum(0).log_().add_(m)
