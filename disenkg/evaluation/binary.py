r"""Binary ranking metrics without scikit-learn: ROC AUC and average precision.

.. math::
    \mathrm{AUC} = \frac{\sum_{i \in P} \mathrm{rank}_i - |P|(|P|+1)/2}{|P|\,|N|}
    \qquad(\text{average ranks for ties}),\qquad
    \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k

over the distinct score thresholds :math:`k` (descending), as scikit-learn defines them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["average_precision", "roc_auc"]


def _check(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if scores.shape != labels.shape or scores.dim() != 1:
        raise ValueError(f"scores and labels must be 1-D of equal length, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    y = labels.bool()
    if y.all() or (~y).all():
        raise ValueError("AUC / AP need both positive and negative labels")
    return scores.double(), y


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve (probability a positive outranks a negative, ties 1/2)."""
    s, y = _check(scores, labels)
    order = torch.argsort(s)
    s_sorted = s[order]
    ranks = torch.empty_like(s)
    # average ranks of tied groups
    uniq, inverse, counts = torch.unique_consecutive(s_sorted, return_inverse=True,
                                                     return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    P, N = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - P * (P + 1) / 2) / (P * N))


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision over distinct thresholds (step-wise, no interpolation)."""
    s, y = _check(scores, labels)
    order = torch.argsort(s, descending=True)
    s, y = s[order], y[order].double()
    tp = torch.cumsum(y, 0)
    # keep the last index of each group of tied scores
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tp = tp[last]
    seen = torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    precision = tp / seen
    recall = tp / y.sum()
    prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - prev) * precision).sum())
