"""Scorer interface: per-component query vectors scored against per-component entities."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Scorer"]


class Scorer(nn.Module):
    r"""Base class of per-component interactions.

    A *dot-product* scorer maps ``(sub, rel)`` ``(B, K, F)`` to query vectors
    ``(B, K, F')`` and entities ``(N, K, F)`` to candidate vectors ``(N, K, F')`` so that
    the logit is :math:`x_{bkn} = \langle q_{bk}, c_{nk}\rangle (+ \beta_n)`; such scorers
    train through the fused :func:`~disenkg.ops.mixture_bce`. Others implement
    :meth:`logits` and are scored eagerly.
    """

    #: logits are inner products of :meth:`query` and :meth:`candidates`
    dot_product: bool = True
    #: whether the model's per-entity bias is added to the logits
    uses_bias: bool = True

    def reset_parameters(self) -> None:
        for m in self.children():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def query(self, sub: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def candidates(self, entity: Tensor) -> Tensor:
        return entity

    def logits(self, sub: Tensor, rel: Tensor, entity: Tensor) -> Tensor:
        """``(B, K, N)`` logits (materialised; for non-dot-product scorers)."""
        q = self.query(sub, rel)
        c = self.candidates(entity)
        return (q.transpose(0, 1) @ c.permute(1, 2, 0)).transpose(0, 1)
