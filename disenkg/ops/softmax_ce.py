r"""1-N softmax cross-entropy over all entities (the "KvsAll + CE" loss of LibKGE).

Query :math:`b` has logits :math:`z_b \in \mathbb{R}^N` over all entities and positives
:math:`P_b` (every known answer). The target distribution is uniform over :math:`P_b`,
mixed with the uniform distribution over all entities by :math:`\epsilon`
(``label_smoothing``):

.. math::
    t_{bn} = (1 - \epsilon)\,\frac{[n \in P_b]}{|P_b|} + \frac{\epsilon}{N},\qquad
    \ell_b = -\sum_n t_{bn} \log\operatorname{softmax}(z_b)_n
           = \mathrm{LSE}(z_b) - \frac{1 - \epsilon}{|P_b|} \sum_{n \in P_b} z_{bn}
             - \frac{\epsilon}{N} \sum_n z_{bn},

so :math:`\partial \ell_b / \partial z_{bn} = \operatorname{softmax}(z_b)_n - t_{bn}`.
With one positive per query this is the 1vsAll cross-entropy (Ruffinelli et al., ICLR
2020, "You CAN teach an old dog new tricks!"; Lacroix et al., ICML 2018).

Unlike :func:`~disenkg.ops.mixture_bce` it takes the ``(B, N)`` logits themselves (the
ranking scores of a ``K = 1`` or logit-mixing model), so it materialises them; the
softmax couples all entities of a row, which is why it has no entity-sharded form.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.ops.mixture_bce.inputs import REDUCTIONS, _check_finite, _make_target

__all__ = ["SoftmaxCrossEntropyLoss", "softmax_cross_entropy"]


def softmax_cross_entropy(logits: Tensor, target: Tensor | tuple[Tensor, Tensor], *,
                          label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    r"""Cross-entropy of ``softmax(logits)`` against the smoothed uniform-over-positives
    target (module docstring).

    Args:
        logits (Tensor): ``(B, N)`` floating-point scores of every entity.
        target (Tensor | tuple[Tensor, Tensor]): a ``(B, N)`` 0/1 tensor, or the positive
            pairs ``(rows, cols)`` as 1-D long tensors (a pair listed twice counts once).
            Every query needs at least one positive.
        label_smoothing (float): :math:`\epsilon \in [0, 1)`. (default: ``0.0``)
        reduction (str): ``mean`` (over queries), ``sum`` or ``none`` (the ``(B,)``
            losses). (default: ``mean``)

    Shapes:
        ``logits (B, N)`` -> a scalar, or ``(B,)`` with ``reduction="none"``.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or 0 in logits.shape:
        raise ValueError(f"logits must have shape (B, N) with B, N > 0, got "
                         f"{tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got {logits.dtype}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}")
    eps = float(label_smoothing)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    _check_finite([("logits", logits.detach())])
    B, N = logits.shape
    tgt = _make_target(target, B, N, 0.0, logits.dtype, logits.device)
    if tgt.is_sparse:
        rows, cols = tgt.rows, tgt.cols
    else:
        rows, cols = tgt.dense.nonzero(as_tuple=True)
        if not bool(((tgt.dense == 0) | (tgt.dense == 1)).all()):
            raise ValueError("a dense target must hold only 0 and 1 (the positives)")
    count = torch.bincount(rows, minlength=B)
    empty = int((count == 0).sum())
    if empty:
        first = int((count == 0).nonzero()[0])
        raise ValueError(f"{empty} of {B} queries have no positive (the first is row {first});"
                         " the softmax target is undefined for them")
    weight = (1.0 - eps) / count[rows].to(logits.dtype)
    positive = torch.zeros(B, dtype=logits.dtype, device=logits.device).index_add_(
        0, rows, logits[rows, cols] * weight)
    loss = torch.logsumexp(logits, dim=1) - positive
    if eps > 0:
        loss = loss - eps * logits.mean(dim=1)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class SoftmaxCrossEntropyLoss(nn.Module):
    """Module form of :func:`softmax_cross_entropy`.

    Args:
        label_smoothing (float): :math:`\\epsilon`. (default: ``0.0``)
        reduction (str): ``mean``, ``sum`` or ``none``. (default: ``mean``)
    """

    def __init__(self, *, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of "
                             f"{list(REDUCTIONS)}")
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        return softmax_cross_entropy(logits, target, label_smoothing=self.label_smoothing,
                                     reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}"
