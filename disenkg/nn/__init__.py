"""Neural network layers."""

from disenkg.nn.scorers import ConvEInteraction

__all__ = ["ConvEInteraction"]
