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
from disenkg.ops.conv_head import conv_bn_head, conv_bn_head_band
from disenkg.ops.impls import check_impl
from disenkg.ops.sync_batch_norm import batch_norm

__all__ = ["ConvEInteraction"]


class ConvEInteraction(nn.Module):
    r"""Maps ``(head, relation)`` embeddings to a query vector of the same size.

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

    In evaluation the stacked image splits into bands: with :math:`k` the kernel size, the
    feature-map rows :math:`0 .. k_h - k` read head pixels only, :math:`k_h - k + 1 ..
    k_h - 1` both halves and :math:`k_h ..` relation pixels only, and the head is linear
    after its ReLU, so :math:`\mathrm{fc}(z) = \mathrm{fc}_h(z_h) + \mathrm{fc}_m(z_m) +
    \mathrm{fc}_r(z_r) + b`. :meth:`relation_part` computes the last two terms once per
    relation (:meth:`ConvE.encode <disenkg.models.ConvE.encode>` does, in evaluation),
    and ``forward(..., relation_part=...)`` adds them to the head and mixed bands of each
    query: about half the head's evaluation FLOPs at the default image, the same values up
    to float rounding.

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

    def forward(self, head: Tensor, relation: Tensor, *,
                relation_part: Tensor | None = None) -> Tensor:
        """``relation_part``: each query's rows of :meth:`relation_part` (evaluation)."""
        B = head.shape[0]
        x = None if relation_part is None else self._banded(head, relation, relation_part)
        if x is None:
            x = torch.cat([head.view(B, 1, self.k_h, self.k_w),
                           relation.view(B, 1, self.k_h, self.k_w)], dim=2)
            x = self.input_drop(batch_norm(self.bn0, x))
            x = conv_bn_head(x, self.conv.weight, self.conv.bias, 1, self.bn1,
                             self.feature_drop, self.fc, chunk=self.image_chunk,
                             precision=self.precision, impl=self.impl)
        return torch.relu(batch_norm(self.bn2, self.hidden_drop(x)))

    def _band(self, x: Tensor, rows: tuple[int, int], fc_bias: bool) -> Tensor | None:
        return conv_bn_head_band(x, self.conv.weight, self.conv.bias, 1, self.bn1, self.fc,
                                 rows=rows, fc_bias=fc_bias, chunk=self.image_chunk,
                                 precision=self.precision, impl=self.impl)

    def relation_part(self, relation: Tensor) -> Tensor | None:
        """The fc output (bias included) of the feature-map rows that read relation pixels
        only, one row per relation row ``(R', D) -> (R', D)``; ``None`` where the banded
        evaluation does not run (training mode, gradients, the eager head, a bfloat16
        head, or a kernel taller than ``k_h``)."""
        a = self.k_h - self.kernel_size + 1
        if self.training or a < 1:
            return None
        img = batch_norm(self.bn0, relation.view(relation.shape[0], 1, self.k_h, self.k_w))
        return self._band(img, (self.k_h, self.k_h + a), True)

    def _banded(self, head: Tensor, relation: Tensor, relation_part: Tensor) -> Tensor | None:
        B, k = head.shape[0], self.kernel_size
        a = self.k_h - k + 1
        h = batch_norm(self.bn0, head.view(B, 1, self.k_h, self.k_w))
        out = self._band(h, (0, a), False)
        if out is None or self.training:
            return None
        if k > 1:  # the mixed rows: the last k - 1 head rows over the first k - 1 relation rows
            r = batch_norm(self.bn0, relation.view(B, 1, self.k_h, self.k_w)[:, :, :k - 1])
            out += self._band(torch.cat([h[:, :, a:], r], dim=2), (a, self.k_h), False)
        return out + relation_part

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(dim={self.embedding_dim}, image=({self.k_h}, "
                f"{self.k_w}), filters={self.num_filters}, kernel={self.kernel_size})")
