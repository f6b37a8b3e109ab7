r"""GAT encoder: a stack of PyG ``GATConv`` layers (Veličković et al., ICLR 2018).

.. math::
    h_i^{(l+1)} = \mathrm{ELU}\Big(\big\Vert_{m=1}^{M} \sum_{j \in \mathcal N(i) \cup \{i\}}
        \alpha_{ij}^{m} W^{m} h_j^{(l)}\Big),\quad
    \alpha_{ij}^m = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a^{m\top}[W^m h_i \Vert W^m h_j])\big)

The last layer concatenates or averages its heads (``concat_last``); dropout is applied to
the input of every layer and to the attention coefficients; ``residual`` adds a linear skip.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

__all__ = ["GATEncoder"]


class GATEncoder(nn.Module):
    """GAT node encoder.

    Args:
        in_channels (int): input features.
        hidden_channels (int): features per head in hidden layers. (paper: ``8``)
        out_channels (int): output features (per head if ``concat_last``).
        num_layers (int): GAT layers (>= 1). (default: ``2``)
        heads (int): heads in hidden layers. (default: ``8``)
        out_heads (int): heads in the last layer. (default: ``1``)
        concat_last (bool): concatenate (else average) the last layer's heads.
            (default: ``False``)
        dropout (float): on each layer's input features. (default: ``0.6``)
        attention_dropout (float): on attention coefficients. (default: ``0.6``)
        residual (bool): linear skip connections. (default: ``False``)

    Shapes:
        x ``(N, in_channels)``, edge_index ``(2, E)`` -> ``(N, out)``; with
        ``return_attention=True`` also a list of ``(edge_index, alpha (E', heads))`` per layer.
    """

    def __init__(self, *, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2, heads: int = 8, out_heads: int = 1,
                 concat_last: bool = False, dropout: float = 0.6,
                 attention_dropout: float = 0.6, residual: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_layers, self.dropout = num_layers, dropout
        self.convs = nn.ModuleList()
        dim = in_channels
        for layer in range(num_layers):
            last = layer == num_layers - 1
            h = out_heads if last else heads
            c = out_channels if last else hidden_channels
            concat = concat_last if last else True
            self.convs.append(GATConv(dim, c, heads=h, concat=concat,
                                      dropout=attention_dropout, residual=residual))
            dim = c * h if concat else c
        self.out_dim = dim

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, return_attention: bool = False):
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"GATEncoder expects x of shape (N, {self.in_channels}), got "
                             f"{tuple(x.shape)}")
        attention = []
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, p=self.dropout, training=self.training)
            if return_attention:
                x, att = conv(x, edge_index, return_attention_weights=True)
                attention.append(att)
            else:
                x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return (x, attention) if return_attention else x

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_dim}, "
                f"num_layers={self.num_layers})")
