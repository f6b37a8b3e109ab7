r"""InteractE interaction (Vashishth et al., AAAI 2020, https://arxiv.org/abs/1911.00219).

The entity and relation vectors are interleaved into ``P`` checkered
``(k_h, 2 k_w)`` images (each from its own random feature permutation, held in a buffer from
a seeded generator), convolved with circular padding (depth-wise over the ``P``
permutations, one shared filter bank), then projected back:

.. math::
    q = \mathrm{ReLU}\big(\mathrm{BN}(W\,\mathrm{vec}(\mathrm{ReLU}(\mathrm{BN}(
        \phi_{chk}(P_k([e; r])) \circledast \omega)))))\big)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disenkg.nn.scorers.base import Scorer
from disenkg.ops.conv_head import IMPLS as HEAD_IMPLS
from disenkg.ops.conv_head import conv_bn_head
from disenkg.ops.impls import check_impl
from disenkg.ops.sync_batch_norm import batch_norm

__all__ = ["InteractEInteraction", "InteractEScorer", "checkered_permutation"]


def checkered_permutation(dim: int, k_h: int, k_w: int, num_perm: int, seed: int) -> Tensor:
    """``(num_perm, 2 * dim)`` indices into ``[e; r]`` forming checkered ``(k_h, 2 k_w)``
    images: cell ``(i, j)`` holds an entity feature when ``(i + j + p)`` is even."""
    if k_h * k_w != dim:
        raise ValueError(f"InteractE needs k_h * k_w == dim, got {k_h} * {k_w} != {dim}")
    g = torch.Generator().manual_seed(seed)
    rows = []
    ii, jj = torch.meshgrid(torch.arange(k_h), torch.arange(2 * k_w), indexing="ij")
    for p in range(num_perm):
        is_ent = ((ii + jj + p) % 2 == 0).flatten()
        ent = torch.randperm(dim, generator=g)
        rel = torch.randperm(dim, generator=g) + dim
        idx = torch.empty(2 * dim, dtype=torch.long)
        idx[is_ent] = ent
        idx[~is_ent] = rel
        rows.append(idx)
    return torch.stack(rows)


class InteractEInteraction(nn.Module):
    """Maps ``(head, relation)`` ``(B, D)`` to a query ``(B, D)``.

    Args:
        embedding_dim (int): D = ``k_h * k_w``. (default: ``200``)
        k_h (int): image height. (default: ``20``)
        k_w (int): half the image width. (default: ``10``)
        num_filters (int): filters (shared by permutations). (default: ``200``)
        kernel_size (int): odd square kernel. (default: ``9``)
        num_perm (int): feature permutations P. (default: ``1``)
        feature_dropout (float): 2-D dropout on feature maps. (default: ``0.4``)
        hidden_dropout (float): after the projection. (default: ``0.3``)
        seed (int): seed of the permutation generator. (default: ``0``)
        image_chunk (int): as :class:`~disenkg.nn.scorers.ConvEInteraction`.
            (default: ``256``)
        impl (str): as :class:`~disenkg.nn.scorers.ConvEInteraction`. (default: ``"auto"``)
        precision (str): as :class:`~disenkg.nn.scorers.ConvEInteraction`.
            (default: ``"fp32"``, exact)
    """

    def __init__(self, *, embedding_dim: int = 200, k_h: int = 20, k_w: int = 10,
                 num_filters: int = 200, kernel_size: int = 9, num_perm: int = 1,
                 feature_dropout: float = 0.4, hidden_dropout: float = 0.3,
                 seed: int = 0, image_chunk: int = 256, impl: str = "auto",
                 precision: str = "fp32") -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"InteractE needs an odd kernel_size, got {kernel_size}")
        dim = embedding_dim
        self.embedding_dim, self.k_h, self.k_w = dim, k_h, k_w
        self.image_chunk, self.impl = image_chunk, check_impl(impl, HEAD_IMPLS)
        self.precision = precision
        self.num_filters, self.kernel_size, self.num_perm = num_filters, kernel_size, num_perm
        self.register_buffer("perm", checkered_permutation(dim, k_h, k_w, num_perm, seed))
        self.bn0 = nn.BatchNorm2d(num_perm)
        self.filters = nn.Parameter(torch.empty(num_filters, 1, kernel_size, kernel_size))
        self.bn1 = nn.BatchNorm2d(num_filters * num_perm)
        self.fc = nn.Linear(num_filters * num_perm * k_h * 2 * k_w, dim)
        self.bn2 = nn.BatchNorm1d(dim)
        self.feature_drop = nn.Dropout2d(feature_dropout)
        self.hidden_drop = nn.Dropout(hidden_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.filters)
        for m in (self.bn0, self.bn1, self.fc, self.bn2):
            m.reset_parameters()

    def forward(self, head: Tensor, relation: Tensor) -> Tensor:
        B = head.shape[0]
        comb = torch.cat([head, relation], dim=-1)  # (B, 2D)
        x = comb[:, self.perm].view(B, self.num_perm, self.k_h, 2 * self.k_w)
        x = batch_norm(self.bn0, x)
        pad = self.kernel_size // 2
        x = F.pad(x, (pad, pad, pad, pad), mode="circular")
        x = conv_bn_head(x, self.filters, None, self.num_perm, self.bn1, self.feature_drop,
                         self.fc, chunk=self.image_chunk, precision=self.precision,
                         impl=self.impl)
        return torch.relu(batch_norm(self.bn2, self.hidden_drop(x)))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(dim={self.embedding_dim}, image=({self.k_h}, "
                f"{2 * self.k_w}), filters={self.num_filters}, kernel={self.kernel_size}, "
                f"perm={self.num_perm})")


class _ConvScorer(Scorer):
    """Applies a 2-D interaction to every component (weights shared across components)."""

    interaction: nn.Module

    def query(self, sub: Tensor, rel: Tensor) -> Tensor:
        B, K, Fd = sub.shape
        q = self.interaction(sub.reshape(B * K, Fd), rel.reshape(B * K, Fd))
        return q.view(B, K, -1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.interaction})"


class InteractEScorer(_ConvScorer):
    """InteractE per component (arguments as :class:`InteractEInteraction`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.interaction = InteractEInteraction(**kwargs)
