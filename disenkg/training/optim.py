r"""Adam whose update of a large CPU parameter runs in chunks (no parameter-sized temporaries).

:class:`torch.optim.Adam`'s single-tensor update (the one it uses for CPU tensors) computes

.. math::
    m \leftarrow \beta_1 m + (1 - \beta_1) g,\qquad
    v \leftarrow \beta_2 v + (1 - \beta_2) g^2,\qquad
    \theta \leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\,
        \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

with whole-tensor expressions: ``sqrt(v)`` and its quotient are two temporaries the size of
the parameter (and ``g + \lambda \theta`` a third with weight decay). For an entity table of
500 000 x 200 floats that is 800 MB on top of the table, its gradient and both moments.
:class:`ChunkedAdam` runs the same element-wise operations, in the same order, over
contiguous slices of at most ``chunk_elements`` elements, so the temporaries are
chunk-sized and every element gets the same floating-point operations as in
:class:`torch.optim.Adam` (``tests/training/test_optim.py`` checks the parameters and moments
bit for bit). Its state and ``state_dict`` are :class:`torch.optim.Adam`'s, so checkpoints
move freely between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["ChunkedAdam"]


def _scalar_dtype() -> torch.dtype:
    """The dtype of Adam's ``step`` counter (as :class:`torch.optim.Adam` makes it)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class ChunkedAdam(torch.optim.Adam):
    """:class:`torch.optim.Adam` (L2 weight decay) that updates CPU parameters of at least
    ``chunk_elements`` elements chunk by chunk (module docstring).

    Other parameters (small, on a GPU, non-contiguous, complex), and groups with options the
    chunked update does not implement (``amsgrad``, ``maximize``, ``capturable``,
    ``differentiable``, decoupled weight decay, a tensor learning rate), take
    :class:`torch.optim.Adam`'s own update.

    Args:
        params: parameters or parameter groups.
        lr (float): learning rate :math:`\\eta`.
        betas (tuple[float, float]): :math:`(\\beta_1, \\beta_2)`. (default: ``(0.9, 0.999)``)
        eps (float): :math:`\\epsilon`. (default: ``1e-8``)
        weight_decay (float): :math:`\\lambda`, added to the gradient as
            :math:`\\lambda\\theta`. (default: ``0``)
        chunk_elements (int): elements per chunk, also the size from which a parameter is
            chunked. (default: ``2**20``)
    """

    def __init__(self, params: Iterable[Any], *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, chunk_elements: int = 1 << 20) -> None:
        if int(chunk_elements) <= 0:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.chunk_elements = int(chunk_elements)

    def _is_chunked(self, p: Tensor, group: dict[str, Any]) -> bool:
        return (p.grad is not None and p.device.type == "cpu" and not p.grad.is_sparse
                and p.numel() >= self.chunk_elements and not torch.is_complex(p)
                and p.is_contiguous() and p.grad.is_contiguous()
                and not (group["amsgrad"] or group["maximize"] or group["capturable"]
                         or group["differentiable"] or group.get("fused")
                         or group.get("decoupled_weight_decay", False))
                and not isinstance(group["lr"], Tensor)
                and not any(isinstance(b, Tensor) for b in group["betas"]))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        whole = [group["params"] for group in self.param_groups]
        chunked = []
        for group in self.param_groups:
            mine = [p for p in group["params"] if self._is_chunked(p, group)]
            ids = {id(p) for p in mine}
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            chunked.append(mine)
        try:
            super().step()
        finally:
            for group, params in zip(self.param_groups, whole):
                group["params"] = params
        for group, mine in zip(self.param_groups, chunked):
            for p in mine:
                self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        """:class:`torch.optim.Adam`'s single-tensor update of ``p``, chunk by chunk."""
        state = self.state[p]
        if len(state) == 0:  # as torch.optim.Adam initialises it
            state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        param, grad = p.view(-1), p.grad.view(-1)
        exp_avg, exp_avg_sq = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1)
        n, c = param.numel(), self.chunk_elements
        for lo in range(0, n, c):
            hi = min(lo + c, n)
            g = grad[lo:hi]
            if wd != 0:
                g = g.add(param[lo:hi], alpha=wd)
            m, v = exp_avg[lo:hi], exp_avg_sq[lo:hi]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            param[lo:hi].addcdiv_(m, denom, value=-step_size)
            del denom  # freed before the next chunk's two temporaries
