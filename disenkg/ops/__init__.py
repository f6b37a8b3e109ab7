"""Fused operators."""

from disenkg.ops.mixture_bce import MixtureBCELoss, mixture_bce

__all__ = ["MixtureBCELoss", "mixture_bce"]
