r"""Fused softmax-mixture binary cross-entropy over all candidate entities.

See :func:`mixture_bce` for the definition. Implementations: ``"torch"`` (eager and
materialising, :mod:`~disenkg.ops.mixture_bce.eager`), ``"chunked"`` (tiles over
entities, CPU default), ``"triton"`` (GPU kernels, lazily imported) and ``"auto"``.
"""

from disenkg.ops.mixture_bce.api import IMPLS, MixtureBCELoss, mixture_bce

__all__ = ["IMPLS", "MixtureBCELoss", "mixture_bce"]
