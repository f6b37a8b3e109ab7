r"""Edge attention logits of the disentangled relation-aware layer, one per component.

For an edge :math:`j \to i` with relation :math:`r` and component :math:`k` (before the
LeakyReLU and the softmax over :math:`i`'s incoming edges):

.. math::
    \text{dot\_weight}:\ \langle x_{i,k} \odot W_{r,k},\ x_{j,k} \odot W_{r,k}\rangle \qquad
    \text{dot\_emb}:\ \langle x_{i,k} \odot r,\ x_{j,k} \odot r\rangle

    \text{cat\_weight}:\ \langle a_k,\ [x_{i,k} \odot W_{r,k} \,\|\, x_{j,k} \odot W_{r,k}]\rangle
    \qquad
    \text{cat\_emb}:\ \langle a_k,\ [x_{i,k} \odot r \,\|\, x_{j,k} \odot r]\rangle \qquad
    \text{learn}:\ \langle a_k,\ m_{j \to i, k}\rangle

with learned :math:`a_k` and the composed message :math:`m`. Shapes: ``x_i``, ``x_j``,
``w``, ``msg`` ``(E, K, F)``; ``r`` ``(E, 1, F)``; output ``(E, K)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.utils import Registry

__all__ = ["EDGE_ATTENTIONS", "EdgeAttention"]

EDGE_ATTENTIONS: Registry[type[EdgeAttention]] = Registry("edge attention")


class EdgeAttention(nn.Module):
    """Base: ``forward(x_i, x_j, r, w, msg) -> (E, K)`` attention logits."""

    #: whether the logits need the composed message (``learn``)
    needs_message: bool = False

    def relation_table(self, rel: Tensor, rel_weight: Tensor) -> Tensor | None:
        r"""``(R', K, F)`` per-relation table :math:`T_r` when the logits are
        :math:`\langle x_i, x_j \odot T_r\rangle` (then the layer computes them as an edge
        product without per-edge relation tensors), else ``None``. ``rel``: ``(R', F)``
        relation embeddings, ``rel_weight``: ``(R', K, F)``."""
        return None

    def __init__(self, *, num_components: int, channels: int) -> None:
        super().__init__()
        self.num_components = num_components
        self.channels = channels

    def reset_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        name = next(k for k in EDGE_ATTENTIONS if EDGE_ATTENTIONS.get(k) is type(self))
        return f"{self.__class__.__name__}({name!r}, K={self.num_components})"


class _Dot(EdgeAttention):
    r""":math:`\langle x_i \odot s, x_j \odot s\rangle = \langle x_i, x_j \odot s^2\rangle`
    with the scaling ``s`` chosen by :meth:`scaling`; :math:`s^2` is the relation table."""

    def scaling(self, r: Tensor, w: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def relation_table(self, rel: Tensor, rel_weight: Tensor) -> Tensor:
        s = self.scaling(rel.unsqueeze(1), rel_weight)
        return (s * s).expand_as(rel_weight)

    def forward(self, x_i, x_j, r, w, msg=None) -> Tensor:
        s = self.scaling(r, w)
        return (x_i * x_j * (s * s)).sum(-1)


@EDGE_ATTENTIONS.register("dot_weight")
class DotWeightAttention(_Dot):
    def scaling(self, r: Tensor, w: Tensor) -> Tensor:
        return w


@EDGE_ATTENTIONS.register("dot_emb")
class DotEmbAttention(_Dot):
    def scaling(self, r: Tensor, w: Tensor) -> Tensor:
        return r


class _Learned(EdgeAttention):
    width = 1

    def __init__(self, *, num_components: int, channels: int) -> None:
        super().__init__(num_components=num_components, channels=channels)
        self.att = nn.Parameter(torch.empty(num_components, self.width * channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.att)


class _Concat(_Learned):
    """``<a_k, [x_i * s || x_j * s]>`` with the scaling ``s`` chosen by :meth:`scaling`."""

    width = 2

    def scaling(self, r: Tensor, w: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x_i, x_j, r, w, msg=None) -> Tensor:
        F = self.channels
        s = self.scaling(r, w)
        return ((x_i * s) * self.att[:, :F]).sum(-1) + ((x_j * s) * self.att[:, F:]).sum(-1)


@EDGE_ATTENTIONS.register("cat_weight")
class CatWeightAttention(_Concat):
    def scaling(self, r: Tensor, w: Tensor) -> Tensor:
        return w


@EDGE_ATTENTIONS.register("cat_emb")
class CatEmbAttention(_Concat):
    def scaling(self, r: Tensor, w: Tensor) -> Tensor:
        return r


@EDGE_ATTENTIONS.register("learn")
class LearnAttention(_Learned):
    needs_message = True

    def forward(self, x_i, x_j, r, w, msg=None) -> Tensor:
        return (msg * self.att).sum(-1)
