r"""ConvE interaction (Dettmers et al., AAAI 2018, https://arxiv.org/abs/1707.01476).

.. math::
    q = \mathrm{ReLU}\big(\mathrm{BN}(W\,\mathrm{vec}(\mathrm{ReLU}(\mathrm{BN}(
        [\bar h; \bar r] * \omega))))\big)

where :math:`\bar h, \bar r` are the embeddings reshaped to ``(k_h, k_w)`` images and
stacked along the height, :math:`*` is a 2-D convolution; the score of candidate
:math:`e` is :math:`\langle q, e\rangle + b_e` (done by the caller).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.ops.conv_head import IMPLS as HEAD_IMPLS
from disenkg.ops.conv_head import conv_bn_head
from disenkg.ops.impls import check_impl
from disenkg.ops.sync_batch_norm import batch_norm

__all__ = ["ConvEInteraction"]


class ConvEInteraction(nn.Module):
    """Maps ``(head, relation)`` embeddings to a query vector of the same size.

    Args:
        embedding_dim (int): D; must equal ``k_h * k_w``.
        k_h (int): image height of one reshaped embedding. (default: ``20``)
        k_w (int): image width. (default: ``10``)
        num_filters (int): convolution channels. (default: ``32``)
        kernel_size (int): square kernel size. (default: ``3``)
        input_dropout (float): on the stacked image. (default: ``0.2``)
        feature_dropout (float): 2-D dropout on feature maps. (default: ``0.2``)
        hidden_dropout (float): after the projection. (default: ``0.3``)
        image_chunk (int): images per chunk of the chunked head (exact batch norm, see
            :func:`~disenkg.ops.conv_head.conv_bn_head`). (default: ``256``)
        impl (str): the head's implementation (:mod:`disenkg.ops.impls`): ``auto``,
            ``eager`` (all feature maps at once), ``chunked`` or ``native`` (chunks with
            the PyTorch / C patch kernels). (default: ``"auto"``)
        precision (str): ``fp32`` (the input's dtype), ``bf16`` (the conv / fc GEMMs and
            feature maps in bfloat16; batch-norm statistics, outputs and gradients stay
            fp32) or ``auto`` (bf16 where :mod:`disenkg.ops.probe` measures it faster, else
            fp32; what the command line uses). (default: ``"fp32"``, exact)

    Shapes:
        head ``(B, D)``, relation ``(B, D)`` -> ``(B, D)``.
    """

    def __init__(self, *, embedding_dim: int, k_h: int = 20, k_w: int = 10,
                 num_filters: int = 32, kernel_size: int = 3, input_dropout: float = 0.2,
                 feature_dropout: float = 0.2, hidden_dropout: float = 0.3,
                 image_chunk: int = 256, impl: str = "auto",
                 precision: str = "fp32") -> None:
        super().__init__()
        if k_h * k_w != embedding_dim:
            raise ValueError(
                f"ConvE needs k_h * k_w == embedding_dim, got {k_h} * {k_w} != {embedding_dim}"
            )
        if kernel_size > min(2 * k_h, k_w):
            raise ValueError(f"kernel_size {kernel_size} exceeds the image ({2 * k_h}, {k_w})")
        self.embedding_dim, self.k_h, self.k_w = embedding_dim, k_h, k_w
        self.num_filters, self.kernel_size = num_filters, kernel_size
        self.image_chunk, self.impl = image_chunk, check_impl(impl, HEAD_IMPLS)
        self.precision = precision
        self.bn0 = nn.BatchNorm2d(1)
        self.conv = nn.Conv2d(1, num_filters, kernel_size)
        self.bn1 = nn.BatchNorm2d(num_filters)
        out_h, out_w = 2 * k_h - kernel_size + 1, k_w - kernel_size + 1
        self.fc = nn.Linear(num_filters * out_h * out_w, embedding_dim)
        self.bn2 = nn.BatchNorm1d(embedding_dim)
        self.input_drop = nn.Dropout(input_dropout)
        self.feature_drop = nn.Dropout2d(feature_dropout)
        self.hidden_drop = nn.Dropout(hidden_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.bn0, self.conv, self.bn1, self.fc, self.bn2):
            m.reset_parameters()

    def forward(self, head: Tensor, relation: Tensor) -> Tensor:
        B = head.shape[0]
        x = torch.cat([head.view(B, 1, self.k_h, self.k_w),
                       relation.view(B, 1, self.k_h, self.k_w)], dim=2)
        x = self.input_drop(batch_norm(self.bn0, x))
        x = conv_bn_head(x, self.conv.weight, self.conv.bias, 1, self.bn1, self.feature_drop,
                         self.fc, chunk=self.image_chunk, precision=self.precision,
                         impl=self.impl)
        return torch.relu(batch_norm(self.bn2, self.hidden_drop(x)))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(dim={self.embedding_dim}, image=({self.k_h}, "
                f"{self.k_w}), filters={self.num_filters}, kernel={self.kernel_size})")
