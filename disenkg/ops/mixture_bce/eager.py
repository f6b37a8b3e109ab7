r"""The eager, materialising mixture BCE (``impl="eager"``): plain, obviously correct,
(B, K, N) in memory. It is the production path for the scorers the fused op does not cover
(``transe_l1``) and the definition the chunked and Triton implementations are tested
against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from disenkg.ops.mixture_bce.inputs import Target

__all__ = ["dense_scale", "dense_target", "mixture_loss_from_logits",
           "mixture_scores_from_logits", "reference_loss"]


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
    A positive-class weight enters as the target's scale (see
    :mod:`~disenkg.ops.mixture_bce.inputs`).
    """
    x = torch.einsum("bkf,nkf->bkn", query, entity)
    if bias is not None:
        x = x + bias
    loss = _elementwise(x, att_logits, dense_target(target, x.dtype), order)
    return loss * dense_scale(target, x.dtype) if target.weighted else loss


def _elementwise(x: Tensor, att_logits: Tensor, t: Tensor, order: str) -> Tensor:
    if order == "before":
        z = (torch.softmax(att_logits, -1).unsqueeze(-1) * x).sum(1)
        return F.binary_cross_entropy_with_logits(z, t, reduction="none")
    loga = torch.log_softmax(att_logits, -1).unsqueeze(-1)
    log_p = torch.logsumexp(loga + F.logsigmoid(x), dim=1)
    log_q = torch.logsumexp(loga + F.logsigmoid(-x), dim=1)
    return -(t * log_p + (1 - t) * log_q)


def mixture_loss_from_logits(
    x: Tensor, att_logits: Tensor, target: Tensor | tuple[Tensor, Tensor], *,
    label_smoothing: float = 0.0, order: str = "after", reduction: str = "mean",
    total_entities: int | None = None, total_queries: int | None = None,
) -> Tensor:
    """Mean (or ``reduction="sum"``) mixture BCE from materialised logits ``x (B, K, N)``
    (eager path for scorers that are not dot products, e.g. TransE-L1). Same semantics as
    ``mixture_bce``."""
    from disenkg.ops.mixture_bce.inputs import make_target

    B, K, N = x.shape
    if att_logits.shape != (B, K):
        raise ValueError(f"att_logits must have shape ({B}, {K}), got {tuple(att_logits.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; choose one of ['mean', 'sum']")
    tgt = make_target(target, B, N, label_smoothing, x.dtype, x.device,
                      total_entities=total_entities, total_queries=total_queries)
    loss = _elementwise(x, att_logits, dense_target(tgt, x.dtype), order)
    return loss.sum() / tgt.mean_count if reduction == "mean" else loss.sum()


def mixture_scores_from_logits(x: Tensor, att_logits: Tensor, order: str = "after") -> Tensor:
    """``(B, N)`` ranking scores from ``x (B, K, N)``: log p (after) or mixed logit (before)."""
    if order == "before":
        return (torch.softmax(att_logits, -1).unsqueeze(-1) * x).sum(1)
    loga = torch.log_softmax(att_logits, -1).unsqueeze(-1)
    return torch.logsumexp(loga + F.logsigmoid(x), dim=1)


def dense_scale(target: Target, dtype: torch.dtype) -> Tensor:
    """The (B, N) loss scale of a positive-class weight (materialised)."""
    if target.scale is not None:
        return target.scale.to(dtype)
    s = torch.full((target.num_rows, target.num_cols), target.s0, dtype=dtype,
                   device=target.rows.device)
    s[target.rows, target.cols] = target.s1
    return s


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
