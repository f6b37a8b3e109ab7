r"""Attention over the K components of a query (DisenKGAT's ``score_method``).

With the query entity's components :math:`s_k`, the relation embedding :math:`r` (shared by
components) and the last layer's relation weights :math:`W_{r,k}`, the logits are
(then LeakyReLU; the softmax over :math:`k` happens inside the loss / scores):

.. math::
    \text{dot\_rel}: \langle s_k \odot W_{r,k}, r\rangle \quad
    \text{dot\_sub}: \langle s_k, r\rangle \quad
    \text{cat\_rel}: w^\top [s_k \odot W_{r,k} \,\|\, r] + b \quad
    \text{cat\_sub}: w^\top [s_k \,\|\, r] + b \quad
    \text{learn}: \theta_{r,k}

Shapes: ``sub``, ``rel``, ``rel_weight`` ``(B, K, F)``; ``rels`` ``(B,)`` -> ``(B, K)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disenkg.utils import Registry

__all__ = ["COMPONENT_ATTENTIONS", "ComponentAttention"]

COMPONENT_ATTENTIONS: Registry[type[ComponentAttention]] = Registry("component attention")


class ComponentAttention(nn.Module):
    """Base class; subclasses implement :meth:`scores` (pre-activation logits)."""

    def __init__(self, *, num_components: int, channels: int, num_relations: int,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.num_components, self.channels = num_components, channels
        self.num_relations = num_relations
        self.negative_slope = negative_slope

    def reset_parameters(self) -> None:
        pass

    def scores(self, sub: Tensor, rel: Tensor, rel_weight: Tensor, rels: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, sub: Tensor, rel: Tensor, rel_weight: Tensor, rels: Tensor) -> Tensor:
        return F.leaky_relu(self.scores(sub, rel, rel_weight, rels), self.negative_slope)


@COMPONENT_ATTENTIONS.register("dot_rel")
class DotRel(ComponentAttention):
    def scores(self, sub, rel, rel_weight, rels):
        return (sub * rel_weight * rel).sum(-1)


@COMPONENT_ATTENTIONS.register("dot_sub")
class DotSub(ComponentAttention):
    def scores(self, sub, rel, rel_weight, rels):
        return (sub * rel).sum(-1)


class _Cat(ComponentAttention):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.fc = nn.Linear(2 * self.channels, 1)

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()


@COMPONENT_ATTENTIONS.register("cat_rel")
class CatRel(_Cat):
    def scores(self, sub, rel, rel_weight, rels):
        return self.fc(torch.cat([sub * rel_weight, rel], dim=-1)).squeeze(-1)


@COMPONENT_ATTENTIONS.register("cat_sub")
class CatSub(_Cat):
    def scores(self, sub, rel, rel_weight, rels):
        return self.fc(torch.cat([sub, rel], dim=-1)).squeeze(-1)


@COMPONENT_ATTENTIONS.register("learn")
class Learned(ComponentAttention):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.theta = nn.Parameter(torch.empty(2 * self.num_relations, self.num_components))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.theta)

    def scores(self, sub, rel, rel_weight, rels):
        return self.theta[rels]
