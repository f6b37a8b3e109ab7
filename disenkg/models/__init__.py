"""Link-prediction models."""

from disenkg.models.base import MixtureLinkModel
from disenkg.models.conve import ConvE
from disenkg.models.disenkgat import DisenKGAT

__all__ = ["ConvE", "DisenKGAT", "MixtureLinkModel"]
