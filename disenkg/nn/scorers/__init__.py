"""Per-component scoring interactions."""

from disenkg.nn.scorers.conve import ConvEInteraction

__all__ = ["ConvEInteraction"]
