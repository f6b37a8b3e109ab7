"""Per-component scoring interactions and their registry."""

from __future__ import annotations

from disenkg.nn.scorers.base import Scorer
from disenkg.nn.scorers.conve import ConvEInteraction
from disenkg.nn.scorers.interacte import (
    InteractEInteraction,
    InteractEScorer,
    _ConvScorer,
    checkered_permutation,
)
from disenkg.nn.scorers.simple import DistMultScorer, TransEL1Scorer, TransEL2Scorer
from disenkg.utils import Registry

__all__ = [
    "SCORERS",
    "ConvEInteraction",
    "ConvEScorer",
    "DistMultScorer",
    "InteractEInteraction",
    "InteractEScorer",
    "Scorer",
    "TransEL1Scorer",
    "TransEL2Scorer",
    "checkered_permutation",
]


class ConvEScorer(_ConvScorer):
    """ConvE per component (arguments as :class:`ConvEInteraction`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.interaction = ConvEInteraction(**kwargs)


SCORERS: Registry[type[Scorer]] = Registry("scorer")
SCORERS.register("interacte")(InteractEScorer)
SCORERS.register("conve")(ConvEScorer)
SCORERS.register("distmult")(DistMultScorer)
SCORERS.register("transe")(TransEL2Scorer)
SCORERS.register("transe_l1")(TransEL1Scorer)

