"""Link-prediction models."""

from disenkg.models.base import MixtureLinkModel
from disenkg.models.conve import ConvE

__all__ = ["ConvE", "MixtureLinkModel"]
