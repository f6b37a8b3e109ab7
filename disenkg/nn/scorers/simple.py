r"""DistMult and TransE scorers, per component.

.. math::
    \text{DistMult}: x_{bkn} = \langle s_k \odot r_k, e_{nk}\rangle \qquad
    \text{TransE-}L_2^2: x_{bkn} = \gamma - \lVert s_k + r_k - e_{nk}\rVert_2^2 \qquad
    \text{TransE-}L_1: x_{bkn} = \gamma - \lVert s_k + r_k - e_{nk}\rVert_1

Squared-L2 TransE is a dot product of augmented vectors,
:math:`\gamma - \lVert o - e\rVert^2 = \langle [2o,\ \gamma - \lVert o\rVert^2,\ 1],\
[e,\ 1,\ -\lVert e\rVert^2]\rangle`, so it trains through the fused loss too; L1 is scored
eagerly. :math:`\gamma` is learned (init ``gamma``) unless ``learn_gamma=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.nn.scorers.base import Scorer

__all__ = ["DistMultScorer", "TransEL1Scorer", "TransEL2Scorer"]


class DistMultScorer(Scorer):
    """DistMult (Yang et al., ICLR 2015) per component."""

    def query(self, sub: Tensor, rel: Tensor) -> Tensor:
        return sub * rel

    def __repr__(self) -> str:
        return "DistMultScorer()"


class _TransE(Scorer):
    uses_bias = False

    def __init__(self, *, gamma: float = 9.0, learn_gamma: bool = True) -> None:
        super().__init__()
        self.gamma_init = gamma
        self.gamma = nn.Parameter(torch.tensor(float(gamma)), requires_grad=learn_gamma)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gamma.fill_(self.gamma_init)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(gamma={self.gamma_init})"


class TransEL2Scorer(_TransE):
    """TransE with squared L2 distance (DisenKGAT's ``gamma_method='norm'``)."""

    def query(self, sub: Tensor, rel: Tensor) -> Tensor:
        o = sub + rel
        sq = (o * o).sum(-1, keepdim=True)
        return torch.cat([2 * o, self.gamma - sq, torch.ones_like(sq)], dim=-1)

    def candidates(self, entity: Tensor) -> Tensor:
        sq = (entity * entity).sum(-1, keepdim=True)
        return torch.cat([entity, torch.ones_like(sq), -sq], dim=-1)


class TransEL1Scorer(_TransE):
    """TransE with L1 distance, scored eagerly (``(B, K, N)`` is materialised)."""

    dot_product = False

    def query(self, sub: Tensor, rel: Tensor) -> Tensor:
        return sub + rel

    def logits(self, sub: Tensor, rel: Tensor, entity: Tensor) -> Tensor:
        o = self.query(sub, rel).transpose(0, 1)  # (K, B, F)
        d = torch.cdist(o, entity.transpose(0, 1).contiguous(), p=1)  # (K, B, N)
        return (self.gamma - d).transpose(0, 1)
