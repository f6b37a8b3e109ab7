r"""Dropout whose mask is a function of a seed and the element's index, never stored.

Element :math:`i` (row-major order) of a tensor is kept iff

.. math::
    \lfloor h(s + (i + 1)\,\gamma \bmod 2^{64}) / 2^{32} \rfloor \ge \tau,
    \qquad \tau = \min(\mathrm{round}(p\, 2^{32}),\ 2^{32} - 1),

with :math:`h` the output function of SplitMix64 (two xor-shift-multiply rounds and a final
xor-shift), :math:`\gamma` = ``0x9E3779B97F4A7C15`` and :math:`s` a 64-bit seed drawn from
PyTorch's default generator at each call (so ``torch.manual_seed`` makes runs repeatable and
:func:`torch.random.fork_rng` scopes it); kept elements are scaled by :math:`1 / (1 - p)`.
A drop has probability :math:`\tau / 2^{32}` (:math:`p` to within :math:`2^{-33}`).
Backward rebuilds the mask from the seed: nothing of the input's size is saved, where
:func:`torch.nn.functional.dropout` keeps a float mask.

``impl="native"`` runs the C/OpenMP kernel (:mod:`disenkg.ops.native`; CPU float32 /
float64): a (14 541, 3, 200) float32 mask in 15 ms on 2 Intel AMX cores, where
``torch.nn.functional.dropout``'s ``bernoulli_`` takes 82-120 ms; ``impl="eager"`` computes the
same mask with PyTorch integer ops (any device; the reference in tests); ``"auto"`` takes
native where it can run, else eager. Both give the same mask for the same seed, on any
device and thread count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from disenkg.ops import native

__all__ = ["GOLDEN", "dropout", "keep_mask", "threshold"]

#: the counter's increment (2^64 / golden ratio)
GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_M64 = (1 << 64) - 1


def threshold(p: float) -> int:
    """:math:`\\tau`: the 32-bit draws below it drop their element."""
    return min(round(p * 2.0**32), 2**32 - 1)


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 PyTorch stores."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def keep_mask(n: int, seed: int, p: float, device: torch.device | str = "cpu") -> Tensor:
    """The ``(n,)`` boolean keep mask of ``seed`` with PyTorch integer ops (int64 products
    wrap modulo :math:`2^{64}`): the reference the native kernel is tested against."""
    i = torch.arange(1, n + 1, dtype=torch.int64, device=device)
    z = i * _signed(GOLDEN) + _signed(seed & _M64)
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 32) >= threshold(p)


def _apply(x: Tensor, seed: int, p: float, use_native: bool) -> Tensor:
    scale = 1.0 / (1.0 - p)
    if use_native:
        x = x.contiguous()
        out = torch.empty_like(x)
        native.kernel("dropout", x.dtype)(x.data_ptr(), out.data_ptr(), x.numel(),
                                          seed & _M64, threshold(p), scale,
                                          torch.get_num_threads())
        return out
    keep = keep_mask(x.numel(), seed, p, x.device).view(x.shape)
    return x * keep.to(x.dtype) * scale


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, seed, p, use_native):
        ctx.args = (seed, p, use_native)
        return _apply(x, seed, p, use_native)

    @staticmethod
    def backward(ctx, grad):
        return _apply(grad, *ctx.args), None, None, None


def dropout(x: Tensor, p: float, training: bool = True, impl: str = "auto") -> Tensor:
    """Drops each element of ``x`` with probability ``p`` and scales the rest by
    :math:`1 / (1 - p)` (see the module doc); ``x`` itself when not ``training`` or
    ``p == 0``, zeros when ``p == 1``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    use = native.use(impl, x.device.type == "cpu" and x.dtype in (torch.float32,
                                                                  torch.float64),
                     f"CPU float32/float64 tensors, got {x.dtype} on {x.device}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    # a signed 64-bit pattern: autograd (and the profiler) pass it as a C++ int64
    seed = int(torch.randint(-2**63, 2**63 - 1, (1,), dtype=torch.int64))
    return _Dropout.apply(x, seed, p, use)
