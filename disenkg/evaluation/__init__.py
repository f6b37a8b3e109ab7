"""Filtered ranking evaluation for link prediction."""

from disenkg.evaluation.evaluator import LinkEvaluator, LinkPredictor
from disenkg.evaluation.metrics import rank_metrics
from disenkg.evaluation.ranks import Ranks, filtered_ranks

__all__ = ["LinkEvaluator", "LinkPredictor", "Ranks", "filtered_ranks", "rank_metrics"]
