r"""Reduced-precision matrix products for the scoring head on CPUs with bfloat16 matrix
hardware (AMX or AVX512-BF16).

Two mechanisms, one policy (``PRECISIONS``: ``fp32``, ``bf16``, ``auto``):

* tensors stored in bfloat16 (the conv scorers' feature maps and their GEMMs,
  :mod:`disenkg.ops.conv_head`), where the memory traffic halves as well;
* :func:`bf16_matmul`: float32 tensors whose matrix products oneDNN may compute from
  bfloat16-rounded inputs with float32 accumulation and float32 outputs
  (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``; like TF32 on GPUs it is a
  permission: small products stay float32), used for the mixture BCE's GEMMs and the
  head's batch-norm moments. For :math:`c = \sum_f a_f b_f` this is
  :math:`\tilde c = \sum_f \mathrm{bf16}(a_f)\,\mathrm{bf16}(b_f)` summed in float32, so
  :math:`|\tilde c - c| \le 2^{-8} \sum_f |a_f b_f|` (plus float32 summation error): the
  inputs lose precision, the result is never rounded to bfloat16.

``auto`` means bfloat16 where this CPU measurably multiplies it faster than float32
(:func:`fast_bf16_cpu`, the probe of :mod:`disenkg.ops.probe`) and the input is float32 on
a CPU, else the input's own precision (float64); for the Triton loss
kernels, bfloat16 GEMM inputs on CUDA devices with bfloat16 support (:func:`triton_bf16`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "auto_bf16", "bf16_matmul", "bf16_matmul_supported",
           "check_precision", "fast_bf16_cpu", "triton_bf16", "use_bf16"]

#: precision policies of the scoring head and loss
PRECISIONS = ("fp32", "bf16", "auto")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return precision


def fast_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 matrices measurably faster than float32: the
    capability probe of :mod:`disenkg.ops.probe` (cached per machine), or, with the probe
    off (``DISENKG_PROBE=off``), the feature flags AMX-BF16 / AVX512-BF16."""
    from disenkg.ops.probe import bf16_pays

    return bf16_pays()


def auto_bf16(x: Tensor) -> bool:
    """What ``auto`` means for ``x``: bfloat16 for float32 CPU tensors on a CPU with
    bfloat16 matrix hardware, else ``x``'s own precision."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and fast_bf16_cpu()


def bf16_matmul_supported() -> bool:
    """Whether this PyTorch build lets float32 CPU matmuls run in bfloat16 (oneDNN's
    ``fp32_precision`` control)."""
    ctl = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return (ctl is not None and hasattr(ctl, "fp32_precision")
            and torch.backends.mkldnn.is_available())


def use_bf16(precision: str, x: Tensor) -> bool:
    """Whether the float32 CPU matmuls on ``x``'s operands should run in bfloat16 under
    ``precision`` (``auto``: when the hardware is fast at it). Raises for ``bf16`` when
    this build or input cannot."""
    check_precision(precision)
    if precision == "fp32":
        return False
    if precision == "bf16":
        if not (x.dtype == torch.float32 and x.device.type == "cpu"
                and bf16_matmul_supported()):
            raise ValueError("precision='bf16' needs float32 CPU inputs and a PyTorch with "
                             "torch.backends.mkldnn.matmul.fp32_precision, got "
                             f"{x.dtype} on {x.device}")
        return True
    return auto_bf16(x) and bf16_matmul_supported()


def triton_bf16(precision: str, x: Tensor) -> bool:
    """Whether the Triton kernels take bfloat16 GEMM inputs (tensor cores, float32
    accumulation) under ``precision``: ``bf16`` always, ``auto`` on CUDA devices with
    bfloat16 support, ``fp32`` never (exact float32 products, no TF32)."""
    check_precision(precision)
    if precision == "auto":
        return x.device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


@contextmanager
def bf16_matmul(enabled: bool = True) -> Iterator[None]:
    """Within the block, float32 CPU matmuls take bfloat16-rounded inputs and accumulate
    and return float32 (see the module doc); the previous setting is restored after."""
    if not enabled:
        yield
        return
    ctl = torch.backends.mkldnn.matmul
    old = ctl.fp32_precision
    ctl.fp32_precision = "bf16"
    try:
        yield
    finally:
        ctl.fp32_precision = old
