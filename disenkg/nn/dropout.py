"""Dropout with the counter-based mask of :func:`disenkg.ops.dropout.dropout`."""

from __future__ import annotations

from torch import Tensor, nn

from disenkg.ops import native
from disenkg.ops.dropout import dropout
from disenkg.ops.impls import check_impl

__all__ = ["Dropout"]


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` whose mask is drawn by :func:`~disenkg.ops.dropout.dropout`
    (a seed from PyTorch's default generator, nothing of the input's size saved for
    backward); the same attributes and (empty) state dict.

    Args:
        p (float): the probability of dropping an element. (default: ``0.5``)
        impl (str): ``auto``, ``native`` or ``eager``
            (:data:`disenkg.ops.impls.KERNEL_IMPLS`). (default: ``"auto"``)
    """

    def __init__(self, p: float = 0.5, *, impl: str = "auto") -> None:
        super().__init__(p)
        self.impl = check_impl(impl, native.IMPLS)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.impl)
