"""The node classifiers by name (``python -m disenkg.run node --task classification
--encoder NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from disenkg.nn.encoders.gat import GATEncoder
from disenkg.nn.encoders.mlp import MLPEncoder
from disenkg.utils import Registry

__all__ = ["NODE_ENCODERS", "NodeEncoderEntry"]


@dataclass(frozen=True)
class NodeEncoderEntry:
    """A node classifier: ``build(in_channels, out_channels, cfg)`` (``cfg`` carries
    ``hidden``, ``heads`` and ``dropout``, e.g. a
    :class:`~disenkg.training.node_config.ClassificationConfig`) and whether its
    ``forward`` takes the graph (``model(x, edge_index)``) or the features alone."""

    build: Callable[[int, int, Any], nn.Module]
    uses_graph: bool
    description: str


#: the node classifiers of ``python -m disenkg.run node --task classification --encoder``
NODE_ENCODERS: Registry[NodeEncoderEntry] = Registry("node encoder")
NODE_ENCODERS.register("gat")(NodeEncoderEntry(
    lambda i, o, cfg: GATEncoder(in_channels=i, hidden_channels=cfg.hidden, out_channels=o,
                                 heads=cfg.heads, dropout=cfg.dropout,
                                 attention_dropout=cfg.dropout),
    uses_graph=True, description="GAT (Velickovic et al. 2018)"))
NODE_ENCODERS.register("mlp")(NodeEncoderEntry(
    lambda i, o, cfg: MLPEncoder(in_channels=i, hidden_channels=64, out_channels=o,
                                 dropout=0.5),
    uses_graph=False, description="MLP on the features alone (no graph)"))
