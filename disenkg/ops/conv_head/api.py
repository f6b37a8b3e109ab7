r"""Memory-bounded ``fc(dropout2d(relu(BN(conv(x)))))`` for the convolutional scorers.

The feature maps of ConvE / InteractE are the largest activations of DisenKGAT training
(FB15k-237 default: 6144 images x 200 filters x 20 x 20 = 2 GB per tensor, several alive).
In training mode :func:`conv_bn_head` processes the images in chunks and keeps only the
input (and the dropout mask) for backward, with **exact** batch-norm semantics:

* the convolution is a GEMM on channels-last patches (:func:`disenkg.ops.patches`) with a
  ones column, :math:`y_g = [W \,|\, b]\,[\mathrm{cols}_g \,|\, 1]^\top` per group ``g``
  (filters shared by the groups, as InteractE's repeated filter bank);
* batch-norm statistics over *all* images follow from the patch moments
  :math:`m_g = \overline{\mathrm{cols}_g}` and :math:`S_g = \overline{\mathrm{cols}_g
  \mathrm{cols}_g^\top}` (``k^2 x k^2``), both read off one Gram matrix of the augmented
  patches (:class:`~disenkg.ops.conv_head.function.PatchMoments`):
  :math:`\mu_{gc} = w_c^\top m_g + b_c`,
  :math:`\sigma^2_{gc} = w_c^\top S_g w_c + 2 b_c w_c^\top m_g + b_c^2 - \mu_{gc}^2`;
  they are differentiable, so gradients flow through the statistics as in
  ``nn.BatchNorm2d``;
* :class:`~disenkg.ops.conv_head.function.ConvHeadFunction` runs all chunks given the
  statistics, its feature maps laid out ``(G, n, L, C)`` (group-major, position-major,
  channel last) so that the convolution, its two gradients and the fc are plain GEMMs
  without layout copies; its backward recomputes each chunk's maps once.

The package: ``api`` (this entry point, the statistics), ``function`` (the two autograd
Functions and the :class:`~disenkg.ops.conv_head.function.HeadPlan` they share),
``buffers`` (per-call buffers reused across chunks), ``layout`` (batch norm folded into
the filters, the fc weights in the feature layout), ``eval`` (evaluation without
gradients: running statistics folded into the conv GEMM), ``eager`` (the plain modules).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.ops.conv_head.buffers import PatchStore
from disenkg.ops.conv_head.eager import conv_bn_head_eager
from disenkg.ops.conv_head.eval import eval_head
from disenkg.ops.conv_head.function import ConvHeadFunction, HeadPlan, PatchMoments
from disenkg.ops.conv_head.layout import fc_weight
from disenkg.ops.impls import OP_IMPLS, check_impl
from disenkg.ops.patches import positions
from disenkg.ops.precision import auto_bf16, check_precision
from disenkg.utils.distributed import all_reduce_sum, batch_stats_synced

__all__ = ["IMPLS", "batch_statistics", "compute_dtype", "conv_bn_head", "conv_bn_head_band",
           "resolve_impl"]

#: ``eager`` = the plain modules (all feature maps at once); ``chunked`` / ``native`` = image
#: chunks with the PyTorch / C patch kernels (:mod:`disenkg.ops.impls`)
IMPLS = OP_IMPLS["conv_head"]

#: the patch kernels' ``impl`` (:mod:`disenkg.ops.patches`) per head ``impl``
_KERNELS = {"auto": "auto", "chunked": "eager", "native": "native"}


def resolve_impl(impl: str, x: Tensor) -> str:
    """``impl`` for the input ``x``: ``auto`` is ``eager`` on CUDA (cuDNN convolutions;
    memory is not what limits a GPU here) and the chunked head with the native kernels
    where they apply elsewhere (kept as ``auto``)."""
    check_impl(impl, IMPLS)
    return "eager" if impl == "auto" and x.device.type == "cuda" else impl


def compute_dtype(precision: str, x: Tensor, impl: str = "auto") -> torch.dtype:
    """The head's compute dtype: ``fp32`` is ``x.dtype``, ``bf16`` bfloat16, and ``auto``
    bfloat16 for float32 inputs on CUDA devices with bfloat16 support, or on CPUs where
    :func:`~disenkg.ops.precision.auto_bf16` says so and the chunked path runs (``impl``
    other than ``eager``), else ``x.dtype``."""
    check_precision(precision)
    impl = resolve_impl(impl, x)
    if precision == "auto":
        if x.device.type == "cuda":
            fast = x.dtype == torch.float32 and torch.cuda.is_bf16_supported()
            return torch.bfloat16 if fast else x.dtype
        return torch.bfloat16 if impl != "eager" and auto_bf16(x) else x.dtype
    return torch.bfloat16 if precision == "bf16" else x.dtype


def _eager(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, bn: nn.BatchNorm2d,
           drop: nn.Dropout2d, fc: nn.Linear, low: torch.dtype) -> Tensor:
    """The plain modules; a lower compute dtype runs them under autocast (convolution and
    fc in ``low``; batch-norm statistics, parameters and their gradients stay in
    ``x.dtype``), the output returned in ``x.dtype``."""
    if low == x.dtype:
        return conv_bn_head_eager(x, weight, bias, groups, bn, drop, fc)
    with torch.autocast(device_type=x.device.type, dtype=low):
        out = conv_bn_head_eager(x, weight, bias, groups, bn, drop, fc)
    return out.to(x.dtype)


def batch_statistics(gram: Tensor, weight: Tensor, bias: Tensor | None, count: int
                     ) -> tuple[Tensor, Tensor]:
    r"""Batch-norm mean and (biased) variance per ``(group, channel)``, ``(G * C,)`` each,
    from the patch Gram matrices ``(G, k*k + 1, k*k + 1)`` of ``count`` patches per group:
    :math:`\mu = w^\top m + b`, :math:`\sigma^2 = w^\top S w + 2 b\, w^\top m + b^2 - \mu^2`
    (clamped at 0)."""
    C = weight.shape[0]
    k2 = gram.shape[-1] - 1
    m = gram[:, :k2, k2] / count  # (G, k*k)
    S = gram[:, :k2, :k2] / count  # (G, k*k, k*k)
    wv = weight.view(C, -1)
    wm = m @ wv.t()  # (G, C): w_c . m_g
    ey2 = torch.einsum("ck,gkl,cl->gc", wv, S, wv)
    if bias is not None:
        mean = wm + bias
        ey2 = ey2 + 2 * bias * wm + bias * bias
    else:
        mean = wm
    var = (ey2 - mean * mean).clamp_min(0).reshape(-1)
    return mean.reshape(-1), var


def _update_running(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """``nn.BatchNorm2d``'s running-statistics update (unbiased variance)."""
    with torch.no_grad():
        bn.num_batches_tracked += 1
        mom_ = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - mom_).add_(mean.detach(), alpha=mom_)
        bn.running_var.mul_(1 - mom_).add_(var.detach() * (count / max(count - 1, 1)),
                                           alpha=mom_)


def conv_bn_head_band(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                      bn: nn.BatchNorm2d, fc: nn.Linear, *, rows: tuple[int, int],
                      fc_bias: bool, chunk: int = 256, precision: str = "fp32",
                      impl: str = "auto") -> Tensor | None:
    """The evaluation head of a band of input rows: ``x`` produces the feature-map rows
    ``rows`` of the whole image, and only their fc columns are applied (``fc_bias`` says
    whether the fc bias is added; :func:`~disenkg.ops.conv_head.eval.eval_head`). The
    bands of an image add up to :func:`conv_bn_head` in evaluation mode. ``None`` where
    the evaluation path does not run: batch norm in training mode, gradients needed, the
    plain modules (``impl`` resolving to ``eager``), or a compute dtype below the input's
    (a bfloat16 GEMM rounds its product once: three bands would round three times, and
    the outputs would move by bfloat16's ~0.4 % instead of float rounding)."""
    impl = resolve_impl(impl, x)
    kernels = _KERNELS.get(impl)
    params = (x, weight, bias, bn.weight, bn.bias, fc.weight, fc.bias)
    if (kernels is None or bn.training or torch.is_grad_enabled()
            and any(t is not None and t.requires_grad for t in params)):
        return None
    low = compute_dtype(precision, x, impl)
    if low != x.dtype:
        return None
    return eval_head(x, weight, bias, groups, bn, fc, chunk, low, kernels, rows=rows,
                     fc_bias=fc_bias)


def conv_bn_head(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                 bn: nn.BatchNorm2d, drop: nn.Dropout2d, fc: nn.Linear, *,
                 chunk: int = 256, precision: str = "fp32", impl: str = "auto") -> Tensor:
    """``fc(drop(relu(bn(conv2d(x, weight.repeat(groups), bias, groups))))).flatten(1)``.

    ``weight`` is ``(C, 1, k, k)``, shared by the ``groups`` input channels of ``x``
    ``(n, groups, H, W)``; ``bias`` (``(C,)``) requires ``groups == 1``. ``precision``
    ``"bf16"`` runs the conv and fc GEMMs, the feature maps and the GEMM of the gradient
    through the batch-norm statistics in bfloat16 (the statistics themselves, outputs and
    parameter gradients stay in ``x.dtype``); it needs a chunked ``impl``.
    ``"auto"`` picks bfloat16 where the hardware makes it fast (:func:`compute_dtype`)
    and the input's dtype on the plain path.
    ``impl`` (:data:`IMPLS`): ``"eager"`` runs the plain modules on all images at once
    (under autocast for a bfloat16 compute dtype); ``"chunked"`` / ``"native"`` process
    ``chunk`` images at a time with the PyTorch / C patch kernels
    (:mod:`disenkg.ops.patches`); ``"auto"`` is ``eager`` on CUDA (cuDNN) and the chunked
    head with the native kernels where they apply elsewhere.

    Paths of the chunked ``impl``: training with gradients and more than ``chunk`` images
    (or bfloat16) runs :class:`~disenkg.ops.conv_head.function.ConvHeadFunction`;
    evaluation mode without gradients runs :func:`~disenkg.ops.conv_head.eval.eval_head`;
    everything else the plain modules
    (:func:`~disenkg.ops.conv_head.eager.conv_bn_head_eager`).
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of images, got {chunk!r}")
    impl = resolve_impl(impl, x)
    low = compute_dtype(precision, x, impl)
    kernels = _KERNELS.get(impl)
    k = weight.shape[-1]
    params = (x, weight, bias, bn.weight, bn.bias, fc.weight, fc.bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                 for t in params)
    if kernels is not None and not bn.training and not drop.training and not needs_grad:
        return eval_head(x, weight, bias, groups, bn, fc, chunk, low, kernels)
    sync = bn.training and batch_stats_synced()
    if not (bn.training and kernels is not None
            and (x.shape[0] > chunk or low != x.dtype or sync) and torch.is_grad_enabled()):
        return _eager(x, weight, bias, groups, bn, drop, fc,
                      low if impl == "eager" or precision == "bf16" else x.dtype)
    n, C = x.shape[0], weight.shape[0]
    store = PatchStore(x.to(low), k, kernels) if low == torch.bfloat16 != x.dtype else None
    gram = PatchMoments.apply(x, k, groups, kernels, low, store, sync)
    L = positions(x, k)
    images = n if not sync else int(all_reduce_sum(torch.tensor([float(n)])).item())
    mean, var = batch_statistics(gram, weight, bias, images * L)
    _update_running(bn, mean, var, images * L)
    p = drop.p if drop.training else 0.0
    fc_w = fc_weight(fc, groups, C, L)  # autograd maps its gradient back to fc.weight
    keep, drop_scale = None, 1.0
    if p > 0:  # Dropout2d: each (image, channel) kept with probability 1 - p
        keep = torch.rand(groups, n, C, device=x.device) < (1 - p)
        drop_scale = 1.0 / (1 - p) if p < 1 else 1.0
    # the GEMMs' copy, with the dropout rescaling folded in
    fc_w_c = (fc_w.detach() * drop_scale if drop_scale != 1.0 else fc_w.detach())
    plan = HeadPlan(kernel_size=k, groups=groups, eps=bn.eps, chunk=chunk, impl=kernels,
                    fc_compute=fc_w_c.to(low).contiguous(), keep=keep,
                    drop_scale=drop_scale, store=store)
    return ConvHeadFunction.apply(x, weight, bias, mean, var, bn.weight, bn.bias, fc_w,
                                  fc.bias, plan)
