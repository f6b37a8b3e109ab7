"""Neural network layers: the DisenKGAT layer and its variants, scorers, MI estimators,
node encoders. Variants live in registries (an unknown name raises listing the choices)."""

from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.conv import DisenConv
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.nn.encoders import GATEncoder, MLPEncoder, VariationalGATEncoder
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import SCORERS, ConvEInteraction, InteractEInteraction

__all__ = [
    "COMPONENT_ATTENTIONS",
    "COMPOSITIONS",
    "EDGE_ATTENTIONS",
    "MI_ESTIMATORS",
    "SCORERS",
    "ConvEInteraction",
    "DisenConv",
    "GATEncoder",
    "InteractEInteraction",
    "MLPEncoder",
    "VariationalGATEncoder",
]
