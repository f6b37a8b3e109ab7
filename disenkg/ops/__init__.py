"""Fused operators: the mixture BCE loss / scores and relation-weighted edge products;
the plain 1-N softmax cross-entropy."""

from disenkg.ops.edge_products import EdgeGraph, edge_aggregate, edge_dot
from disenkg.ops.mixture_bce import MixtureBCELoss, mixture_bce
from disenkg.ops.mixture_scores import mixture_scores
from disenkg.ops.softmax_ce import SoftmaxCrossEntropyLoss, softmax_cross_entropy

__all__ = ["EdgeGraph", "MixtureBCELoss", "SoftmaxCrossEntropyLoss", "edge_aggregate",
           "edge_dot", "mixture_bce", "mixture_scores", "softmax_cross_entropy"]
