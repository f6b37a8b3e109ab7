"""Fused operators: the mixture BCE loss / scores and relation-weighted edge products."""

from disenkg.ops.edge_products import EdgeGraph, edge_aggregate, edge_dot
from disenkg.ops.mixture_bce import MixtureBCELoss, mixture_bce
from disenkg.ops.mixture_scores import mixture_scores

__all__ = ["EdgeGraph", "MixtureBCELoss", "edge_aggregate", "edge_dot", "mixture_bce",
           "mixture_scores"]
