r"""Channels-last patch (im2col) primitives of the convolutional scorer head.

For an image stack ``x`` of shape ``(n, H, W)`` and a ``k x k`` kernel the patch matrix has
one row per output position :math:`p = (m H_o + i) W_o + j` (:math:`H_o = H - k + 1`,
:math:`W_o = W - k + 1`, :math:`L = H_o W_o`):

.. math::
    \mathrm{cols}[p, a k + b] = x[m, i + a, j + b], \qquad
    \mathrm{cols}[p, k^2] = 1 \ (\text{with } \texttt{bias\_column}),

so a convolution with filters :math:`W \in \mathbb{R}^{C \times k^2}` and bias :math:`s` is
the single GEMM :math:`\mathrm{cols}\,[W \,|\, s]^\top`, whose output ``(n, L, C)`` is the
feature map in channels-last order, and the Gram matrix
:math:`\mathrm{cols}^\top \mathrm{cols}` holds the patch sums, second moments and count.
:func:`fold_patches` is the adjoint (col2im) of the first :math:`k^2` columns.
:func:`accumulate_` adds a low-precision GEMM result into a float32 accumulator;
:func:`relu_mask_` and :func:`relu_mask_backward_` are the head's epilogue
:math:`a = \mathrm{relu}(z) \odot m` (``m`` a per-image 0/1 channel mask, as
``Dropout2d`` without its rescaling) and its gradient
:math:`\partial z = \partial a \odot [a > 0]`, in place.

``impl="native"`` runs the C/OpenMP kernels of :mod:`disenkg.ops.native` (CPU float32,
float64, bfloat16), ``"eager"`` the pure-PyTorch reference, ``"auto"`` the former when
it applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from disenkg.ops import native

__all__ = ["accumulate_", "fold_patches", "patches", "positions", "relu_mask_",
           "relu_mask_backward_"]

_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
def _use_native(impl: str, *tensors: Tensor) -> bool:
    bad = next((t for t in tensors if t.device.type != "cpu" or t.dtype not in _SUFFIX), None)
    need = ("CPU float32/float64/bfloat16 tensors"
            + ("" if bad is None else f", got {bad.dtype} on {bad.device}"))
    return native.use(impl, bad is None, need)


_fn = native.kernel


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def positions(x: Tensor, k: int) -> int:
    """:math:`L = (H - k + 1)(W - k + 1)`, the output positions (patch rows) per image of
    ``(..., H, W)`` images under a ``k x k`` kernel."""
    return (x.shape[-2] - k + 1) * (x.shape[-1] - k + 1)


def patches(x: Tensor, k: int, bias_column: bool = True, out: Tensor | None = None,
            impl: str = "auto") -> Tensor:
    """``(n, H, W)`` -> ``(n * L, k * k [+ 1])`` in ``x``'s dtype (see the module doc).

    ``x`` may be a strided view (e.g. one channel of ``(n, G, H, W)``). ``out``, a
    contiguous buffer of at least ``n * L`` rows (e.g. kept across chunks), receives the
    patches in its first rows, which are returned.
    """
    if x.dim() != 3:
        raise ValueError(f"expected (n, H, W) images, got shape {tuple(x.shape)}")
    n, H, W = x.shape
    if not 1 <= k <= min(H, W):
        raise ValueError(f"kernel size {k} does not fit {H} x {W} images")
    Ho, Wo, kk = H - k + 1, W - k + 1, k * k
    ld = kk + int(bias_column)
    rows = n * Ho * Wo
    if out is None:
        out = x.new_empty(rows, ld)
    elif (out.dim() != 2 or out.shape[0] < rows or out.shape[1] != ld
          or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"patch buffer {tuple(out.shape)} {out.dtype} cannot hold "
                         f"({rows}, {ld}) {x.dtype} patches")
    out = out[:rows]
    if _use_native(impl, x):
        if x.stride(2) != 1:
            x = x.contiguous()
        _fn("im2col_cl", x.dtype)(x.data_ptr(), n, x.stride(0), x.stride(1), H, W, k, ld,
                                  out.data_ptr(), torch.get_num_threads())
        return out
    out[:, :kk].view(n, Ho, Wo, k, k).copy_(x.unfold(1, k, 1).unfold(2, k, 1))
    if bias_column:
        out[:, kk] = 1
    return out


def fold_patches(cols: Tensor, shape: tuple[int, int, int], k: int,
                 impl: str = "auto") -> Tensor:
    """Adjoint of :func:`patches` on the first ``k * k`` columns of ``cols``
    ``(n * L, ld)``: returns ``(n, H, W)`` (float32 for bfloat16 ``cols``)."""
    n, H, W = shape
    Ho, Wo, kk = H - k + 1, W - k + 1, k * k
    if cols.dim() != 2 or cols.shape[0] != n * Ho * Wo or cols.shape[1] < kk:
        raise ValueError(f"patch gradient of shape {tuple(cols.shape)} does not match "
                         f"images {tuple(shape)} with kernel {k}: expected "
                         f"({n * Ho * Wo}, >= {kk})")
    acc = _acc_dtype(cols.dtype) if cols.dtype in _SUFFIX else cols.dtype
    if _use_native(impl, cols):
        if cols.stride(1) != 1 or cols.stride(0) != cols.shape[1]:
            cols = cols.contiguous()
        out = torch.empty(n, H, W, dtype=acc, device=cols.device)
        _fn("col2im_cl", cols.dtype)(cols.data_ptr(), n, H, W, k, cols.shape[1],
                                     out.data_ptr(), torch.get_num_threads())
        return out
    g = cols[:, :kk].to(acc).reshape(n, Ho * Wo, kk).transpose(1, 2)
    return F.fold(g, (H, W), k).view(n, H, W)


def _check_epilogue(z: Tensor, keep: Tensor | None) -> None:
    if z.dim() != 3 or not z.is_contiguous():
        raise ValueError(f"expected contiguous (n, L, C) feature maps, got shape "
                         f"{tuple(z.shape)}")
    if keep is not None and (keep.shape != (z.shape[0], z.shape[2])
                             or keep.dtype != torch.bool or not keep.is_contiguous()):
        raise ValueError(f"keep mask must be contiguous ({z.shape[0]}, {z.shape[2]}) "
                         f"torch.bool, got {tuple(keep.shape)} {keep.dtype}")


def relu_mask_(z: Tensor, keep: Tensor | None = None, impl: str = "auto") -> Tensor:
    """``z <- relu(z) * keep[:, None, :]`` in place for ``(n, L, C)`` feature maps and an
    ``(n, C)`` boolean channel mask (dropout's ``1 / (1 - p)`` is the caller's, e.g.
    folded into the next layer's weights)."""
    _check_epilogue(z, keep)
    if _use_native(impl, z):
        _fn("relu_mask", z.dtype)(z.data_ptr(), None if keep is None else keep.data_ptr(),
                                  *z.shape, torch.get_num_threads())
        return z
    z.relu_()
    return z if keep is None else z.mul_(keep.unsqueeze(1))


def relu_mask_backward_(a: Tensor, da: Tensor, impl: str = "auto") -> Tensor:
    """``da <- da * [a > 0]`` in place, where ``a`` is the output of :func:`relu_mask_`
    (``a > 0`` iff ``z > 0`` and the channel is kept, so no mask is needed)."""
    _check_epilogue(a, None)
    if da.shape != a.shape or da.dtype != a.dtype or not da.is_contiguous():
        raise ValueError(f"gradient {tuple(da.shape)} {da.dtype} does not match feature maps "
                         f"{tuple(a.shape)} {a.dtype}")
    if _use_native(impl, a):
        _fn("relu_mask_backward", a.dtype)(a.data_ptr(), da.data_ptr(), a.numel(),
                                           torch.get_num_threads())
        return da
    return da.mul_(a > 0)


def accumulate_(acc: Tensor, x: Tensor, impl: str = "auto") -> Tensor:
    """``acc += x`` in place, with a one-pass kernel for a float32 ``acc`` and bfloat16
    ``x`` (PyTorch's mixed-dtype ``add_`` converts through a temporary)."""
    if acc.shape != x.shape:
        raise ValueError(f"cannot accumulate {tuple(x.shape)} into {tuple(acc.shape)}")
    if (acc.dtype == torch.float32 and x.dtype == torch.bfloat16 and acc.is_contiguous()
            and x.is_contiguous() and _use_native(impl, acc, x)):
        native.load().accumulate_bf16(acc.data_ptr(), x.data_ptr(), acc.numel(),
                                      torch.get_num_threads())
        return acc
    return acc.add_(x)
