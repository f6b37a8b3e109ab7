r"""Composition operators :math:`\phi(x, r, W)` of an entity with a relation, per component.

With entity component :math:`x_k`, relation embedding :math:`r` (shared by components) and
relation-specific component weights :math:`W_{r,k}` (all of size F):

.. math::
    \text{sub}:\ x_k \odot W_{r,k} - r \qquad
    \text{mult}:\ x_k \odot r \odot W_{r,k} \qquad
    \text{cross}:\ x_k \odot r \odot W_{r,k} + x_k \odot W_{r,k} \qquad
    \text{corr}:\ (x_k \odot W_{r,k}) \star r

where :math:`(a \star b)_j = \sum_i a_i\, b_{(i + j) \bmod F}` is circular correlation,
computed with ``torch.fft`` in :math:`O(F \log F)`.

Shapes: ``x`` ``(E, K, F)``, ``r`` ``(E, 1, F)`` (or broadcastable), ``w`` ``(E, K, F)``.

``mult`` and ``cross`` are element-wise scalings of ``x`` by a per-relation factor
:math:`u_{r,k}` (:math:`r \odot W_{r,k}` and :math:`(1 + r) \odot W_{r,k}`), exposed as
:data:`RELATION_FACTORS` so a layer can compute :math:`u` once per relation instead of per
edge.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from disenkg.utils import Registry

__all__ = ["COMPOSITIONS", "RELATION_FACTORS", "ccorr"]

Composition = Callable[[Tensor, Tensor, Tensor], Tensor]
COMPOSITIONS: Registry[Composition] = Registry("composition")
#: compositions of the form ``x * u(r, w)``: name -> ``u``
RELATION_FACTORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mult": lambda r, w: r * w,
    "cross": lambda r, w: (1 + r) * w,
}


def ccorr(a: Tensor, b: Tensor) -> Tensor:
    r"""Circular correlation over the last dim: :math:`\mathrm{irfft}(\overline{\hat a}\hat b)`."""
    n = a.shape[-1]
    fa = torch.fft.rfft(a, dim=-1)
    fb = torch.fft.rfft(b, dim=-1)
    return torch.fft.irfft(torch.conj(fa) * fb, n=n, dim=-1)


@COMPOSITIONS.register("sub")
def compose_sub(x: Tensor, r: Tensor, w: Tensor) -> Tensor:
    return x * w - r


@COMPOSITIONS.register("mult")
def compose_mult(x: Tensor, r: Tensor, w: Tensor) -> Tensor:
    return x * r * w


@COMPOSITIONS.register("cross")
def compose_cross(x: Tensor, r: Tensor, w: Tensor) -> Tensor:
    xw = x * w
    return xw * r + xw


@COMPOSITIONS.register("corr")
def compose_corr(x: Tensor, r: Tensor, w: Tensor) -> Tensor:
    xw = x * w
    return ccorr(xw, r.expand_as(xw))
