r"""Rank-based metrics: MRR, MR and Hits@k.

.. math::
    \mathrm{MRR} = \frac{1}{|Q|}\sum_q \frac{1}{r_q},\quad
    \mathrm{MR} = \frac{1}{|Q|}\sum_q r_q,\quad
    \mathrm{Hits@}k = \frac{1}{|Q|}\sum_q [r_q \le k]
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["KS", "rank_metrics"]

KS = (1, 3, 10)


def rank_metrics(ranks: Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Metrics of a 1-D tensor of (possibly fractional) ranks >= 1."""
    if ranks.dim() != 1 or ranks.numel() == 0:
        raise ValueError(f"ranks must be a non-empty 1-D tensor, got shape {tuple(ranks.shape)}")
    if float(ranks.min()) < 1:
        raise ValueError(f"ranks must be >= 1, got minimum {float(ranks.min())}")
    r = ranks.double()
    out = {"mrr": float((1.0 / r).mean()), "mr": float(r.mean())}
    for k in ks:
        out[f"hits@{k}"] = float((r <= k).double().mean())
    return out
