"""Fused operators."""

from disenkg.ops.mixture_bce import MixtureBCELoss, mixture_bce
from disenkg.ops.mixture_scores import mixture_scores

__all__ = ["MixtureBCELoss", "mixture_bce", "mixture_scores"]
