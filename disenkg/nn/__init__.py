"""Neural network layers: the DisenKGAT layer and its variants, scorers, MI estimators,
node encoders. Variants live in registries (an unknown name raises listing the choices).

The message-passing layers (:class:`DisenConv`, the node encoders) build on PyTorch
Geometric and are imported on first access, so that a model without a graph encoder
(ConvE) does not import PyG. (Its import also loads ``torch._dynamo``, about 150 MB, but
``torch.optim`` loads that too on an optimiser's first parameter group, so training saves
only PyG's own share.)
"""

from __future__ import annotations

import importlib
from typing import Any

from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.dropout import Dropout
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import SCORERS, ConvEInteraction, InteractEInteraction

_LAZY = {"DisenConv": "disenkg.nn.conv", "GATEncoder": "disenkg.nn.encoders",
         "MLPEncoder": "disenkg.nn.encoders", "VariationalGATEncoder": "disenkg.nn.encoders"}

__all__ = [
    "COMPONENT_ATTENTIONS",
    "COMPOSITIONS",
    "EDGE_ATTENTIONS",
    "MI_ESTIMATORS",
    "SCORERS",
    "ConvEInteraction",
    "DisenConv",
    "Dropout",
    "GATEncoder",
    "InteractEInteraction",
    "MLPEncoder",
    "VariationalGATEncoder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'disenkg.nn' has no attribute {name!r}")
