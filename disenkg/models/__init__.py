"""Link-prediction models. :class:`DisenKGAT` (PyTorch Geometric's message passing) is
imported on first access (see :mod:`disenkg.nn`)."""

from __future__ import annotations

from typing import Any

from disenkg.models.base import MixtureLinkModel
from disenkg.models.conve import ConvE

__all__ = ["ConvE", "DisenKGAT", "MixtureLinkModel"]


def __getattr__(name: str) -> Any:
    if name == "DisenKGAT":
        from disenkg.models.disenkgat import DisenKGAT

        return DisenKGAT
    raise AttributeError(f"module 'disenkg.models' has no attribute {name!r}")
