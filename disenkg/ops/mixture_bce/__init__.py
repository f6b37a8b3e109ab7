r"""Fused softmax-mixture binary cross-entropy over all candidate entities.

See :func:`mixture_bce` for the definition. Implementations (:mod:`disenkg.ops.impls`):
``"eager"`` (materialising, :mod:`~disenkg.ops.mixture_bce.eager`), ``"chunked"`` and
``"native"`` (tiles over entities, with the PyTorch or the C element-wise tile),
``"triton"`` (GPU kernels, lazily imported) and ``"auto"`` (``native`` where it applies on
a CPU, ``triton`` on CUDA).
"""

from disenkg.ops.mixture_bce.api import IMPLS, MixtureBCELoss, mixture_bce

__all__ = ["IMPLS", "MixtureBCELoss", "mixture_bce"]
