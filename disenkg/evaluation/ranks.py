r"""Filtered ranks from score counts (no sort), with optimistic / pessimistic / realistic ties.

For a query with target score :math:`s^*` and the set :math:`U` of unfiltered candidates
(all entities minus the *other* true answers; the target itself stays):

.. math::
    r_{opt} = 1 + |\{n \in U : s_n > s^*\}|,\qquad
    r_{pes} = |\{n \in U : s_n \ge s^*\}|,\qquad
    r_{real} = (r_{opt} + r_{pes}) / 2.

Each is O(N) per query; callers may chunk over queries freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Ranks", "filtered_ranks"]


@dataclass
class Ranks:
    """Ranks of a batch, each a ``(B,)`` float tensor."""

    optimistic: Tensor
    pessimistic: Tensor

    @property
    def realistic(self) -> Tensor:
        return (self.optimistic + self.pessimistic) / 2

    def get(self, kind: str) -> Tensor:
        if kind not in ("optimistic", "pessimistic", "realistic"):
            raise ValueError(
                f"unknown rank type {kind!r}; choose one of optimistic, pessimistic, realistic"
            )
        return getattr(self, kind)


def _check_tensor(name: str, x, *, floating: bool = False, integer: bool = False,
                  device: torch.device | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__module__}."
                        f"{type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but scores are on {device}")


def filtered_ranks(
    scores: Tensor, target: Tensor, known: Tensor | tuple[Tensor, Tensor] | None = None
) -> Ranks:
    """Filtered ranks of ``target`` among ``scores``.

    Args:
        scores (Tensor): ``(B, N)`` float, higher is better.
        target (Tensor): ``(B,)`` long, the true answer of each row.
        known: the other true answers to filter out: a ``(B, N)`` bool mask or a pair
            ``(rows, cols)`` of long tensors. The target position is never filtered, even
            if listed. ``None`` gives raw (unfiltered) ranks.

    Returns:
        :class:`Ranks` with ``optimistic``, ``pessimistic`` and ``realistic`` ``(B,)``.
    """
    _check_tensor("scores", scores, floating=True)
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (B, N), got {tuple(scores.shape)}")
    B, N = scores.shape
    _check_tensor("target", target, integer=True, device=scores.device)
    if target.shape != (B,):
        raise ValueError(f"target must have shape (B,) = ({B},), got {tuple(target.shape)}")
    if known is not None and not isinstance(known, Tensor):
        if not isinstance(known, (tuple, list)) or len(known) != 2:
            raise TypeError(f"known must be a (B, N) bool tensor or a pair (rows, cols) of "
                            f"index tensors, got {type(known).__name__}")
        for name, k in zip(("known rows", "known cols"), known):
            _check_tensor(name, k, integer=True, device=scores.device)
            if k.dim() != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(k.shape)}")
        if known[0].shape != known[1].shape:
            raise ValueError(f"known rows and cols must have the same length, got "
                             f"{known[0].numel()} and {known[1].numel()}")
    elif known is not None:
        _check_tensor("known", known, device=scores.device)
    # every value check from one transfer (a GPU is waited for once per batch, not 7 times)
    pair = known is not None and not isinstance(known, Tensor) and known[0].numel() > 0
    stats = [torch.isnan(scores).sum()]
    if target.numel():
        stats += [target.min(), target.max()]
    if pair:
        stats += [known[0].min(), known[0].max(), known[1].min(), known[1].max()]
    vals = torch.stack([v.long() for v in stats]).tolist()
    if vals[0]:
        raise ValueError(f"scores contain {vals[0]} NaN value(s)")
    if target.numel() and (vals[1] < 0 or vals[2] >= N):
        raise ValueError(f"target ids must lie in [0, {N}), got [{vals[1]}, {vals[2]}]")
    if pair:
        r0, r1, c0, c1 = vals[-4:]
        if r1 >= B or c1 >= N or r0 < 0 or c0 < 0:
            raise ValueError(f"known (rows, cols) must index a ({B}, {N}) score matrix")
    rows = torch.arange(B, device=scores.device)
    s_true = scores[rows, target].unsqueeze(1)
    greater = scores > s_true
    greater_eq = scores >= s_true
    if known is None:
        n_gt = greater.sum(1)
        n_ge = greater_eq.sum(1)
    elif isinstance(known, Tensor):
        if known.shape != (B, N) or known.dtype != torch.bool:
            raise ValueError(
                f"known must be a (B, N) = ({B}, {N}) bool mask, got "
                f"{tuple(known.shape)} {known.dtype}"
            )
        keep = ~known
        keep[rows, target] = True
        n_gt = (greater & keep).sum(1)
        n_ge = (greater_eq & keep).sum(1)
    else:
        kr, kc = known
        other = kc != target[kr]
        kr, kc = kr[other], kc[other]
        # Deduplicate so each filtered candidate is subtracted once.
        key = torch.unique(kr * N + kc)
        kr, kc = key // N, key % N
        s = scores[kr, kc]
        n_gt = greater.sum(1) - torch.zeros(B, dtype=torch.long, device=scores.device).index_add_(
            0, kr, (s > s_true[kr, 0]).long())
        n_ge = greater_eq.sum(1) - torch.zeros(
            B, dtype=torch.long, device=scores.device).index_add_(
            0, kr, (s >= s_true[kr, 0]).long())
    return Ranks(optimistic=(n_gt + 1).float(), pessimistic=n_ge.float())
