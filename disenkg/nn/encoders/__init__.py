"""Node-level encoders: MLP, GAT and variational GAT."""

from disenkg.nn.encoders.gat import GATEncoder
from disenkg.nn.encoders.mlp import ACTIVATIONS, NORMS, MLPEncoder
from disenkg.nn.encoders.variational import VariationalGATEncoder, gaussian_kl

__all__ = ["ACTIVATIONS", "NORMS", "GATEncoder", "MLPEncoder", "VariationalGATEncoder",
           "gaussian_kl"]
