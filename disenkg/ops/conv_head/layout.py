"""Batch norm folded into the convolution, and the fc weights in the feature-map layout.

The chunked head keeps its feature maps as ``(G, n, L, C)`` (group-major, position-major,
channel last), so the fc weights, whose columns ``nn.Linear`` orders ``(G, C, L)``, are
reordered once per call (training) or once per weight version (evaluation, cached).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

__all__ = ["affine", "augmented_filters", "eval_fc_columns", "fc_columns", "fc_weight"]


def affine(w: Tensor, b: Tensor | None, mean: Tensor, var: Tensor, gamma: Tensor,
           beta: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    r"""BN (+ conv bias) folded into one per-channel ``scale`` and ``shift``:
    :math:`\mathrm{inv} = (\sigma^2 + \epsilon)^{-1/2}`, ``scale = gamma * inv``,
    ``shift = beta + (b - mean) * scale``; returns ``(inv, scale, shift)``, each
    ``(G * C,)``."""
    inv = torch.rsqrt(var + eps)
    scale = gamma * inv
    shift = beta - mean * scale
    if b is not None:
        shift = shift + b.repeat(groups) * scale
    return inv, scale, shift


def augmented_filters(w: Tensor, scale: Tensor, shift: Tensor, groups: int,
                      dtype: torch.dtype) -> Tensor:
    """Per group ``[W * scale | shift]``: ``(G, C, k*k + 1)`` in ``dtype`` (the shift rides
    on the patches' ones column, so one GEMM writes the normalised maps ``z``)."""
    C = w.shape[0]
    wv = w.reshape(1, C, -1) * scale.view(groups, C, 1)
    return torch.cat([wv, shift.view(groups, C, 1)], dim=-1).to(dtype)


def fc_columns(fc_w: Tensor, groups: int) -> Tensor:
    """``(D, G * L * C)`` fc weights as ``(G, L * C, D)`` contiguous blocks: the forward
    GEMMs ``feat_g @ W_g^T`` ran ~15 % faster on this layout than on a transposed view,
    for one copy of the weights per call."""
    D = fc_w.shape[0]
    return fc_w.view(D, groups, -1).permute(1, 2, 0).contiguous()


def fc_weight(fc: nn.Linear, groups: int, C: int, L: int) -> Tensor:
    """fc columns reordered from ``(G, C, L)`` to the ``(G, L, C)`` feature layout
    (differentiable: autograd maps the gradient back to ``fc.weight``)."""
    D = fc.weight.shape[0]
    return fc.weight.view(D, groups, C, L).transpose(2, 3).reshape(D, -1)


#: evaluation copies of fc weights, per module: (key, reordered weight in the compute dtype)
_EVAL_FC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def eval_fc_columns(fc: nn.Linear, groups: int, C: int, L: int, dtype: torch.dtype
                    ) -> Tensor:
    """:func:`fc_weight` in ``dtype`` as :func:`fc_columns` blocks, cached across the
    batches of an evaluation (the reordered copy is as large as the weight, 64 MB at the
    FB15k-237 default). The key holds the weight's identity and version counter, which
    every in-place update (an optimiser step, ``load_state_dict``) bumps, so a stale copy
    is never used."""
    w = fc.weight
    key = (id(w), w._version, w.data_ptr(), groups, C, L, dtype)
    hit = _EVAL_FC.get(fc)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        out = fc_columns(fc_weight(fc, groups, C, L).to(dtype), groups)
    _EVAL_FC[fc] = (key, out)
    return out
