r"""Variational GAT encoder: per-node Gaussian posteriors (Kipf & Welling 2016, VGAE).

A GAT trunk gives :math:`h`, two ``GATConv`` heads give :math:`\mu` and
:math:`\log\sigma`; in training :math:`z = \mu + \sigma \odot \epsilon`,
:math:`\epsilon \sim \mathcal N(0, I)`, at evaluation :math:`z = \mu`. The KL term to the
standard normal prior is, per node,

.. math::
    \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\Vert\, \mathcal N(0, I)\big)
    = \tfrac12 \textstyle\sum_d \big(\sigma_d^2 + \mu_d^2 - 1 - \log\sigma_d^2\big).

``forward`` returns ``(mu, logstd)`` so the module plugs into PyG's
``torch_geometric.nn.VGAE`` unchanged; :meth:`mean_logvar` gives ``(mu, log sigma^2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from disenkg.nn.encoders.gat import GATEncoder

__all__ = ["VariationalGATEncoder", "gaussian_kl"]

MAX_LOGSTD = 10.0


def gaussian_kl(mu: Tensor, logstd: Tensor) -> Tensor:
    """Per-row KL divergence to N(0, I), shape ``(N,)``."""
    logstd = logstd.clamp(max=MAX_LOGSTD)
    return 0.5 * (torch.exp(2 * logstd) + mu * mu - 1 - 2 * logstd).sum(-1)


class VariationalGATEncoder(nn.Module):
    """GAT trunk + mean / log-std ``GATConv`` heads.

    Args:
        in_channels (int): input features.
        hidden_channels (int): features per head in the trunk. (default: ``8``)
        out_channels (int): latent size d.
        num_layers (int): trunk layers (>= 1). (default: ``1``)
        heads (int): heads of the trunk. (default: ``8``)
        dropout (float): feature dropout. (default: ``0.0``)
        attention_dropout (float): attention dropout. (default: ``0.0``)

    Shapes:
        x ``(N, in_channels)``, edge_index ``(2, E)`` -> ``mu, logstd`` ``(N, d)``.
    """

    def __init__(self, *, in_channels: int, hidden_channels: int = 8, out_channels: int,
                 num_layers: int = 1, heads: int = 8, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = GATEncoder(in_channels=in_channels, hidden_channels=hidden_channels,
                                out_channels=hidden_channels, num_layers=num_layers,
                                heads=heads, out_heads=heads, concat_last=True,
                                dropout=dropout, attention_dropout=attention_dropout)
        dim = self.trunk.out_dim
        self.mu = GATConv(dim, out_channels, heads=1, dropout=attention_dropout)
        self.logstd = GATConv(dim, out_channels, heads=1, dropout=attention_dropout)
        self.out_channels = out_channels

    def reset_parameters(self) -> None:
        self.trunk.reset_parameters()
        self.mu.reset_parameters()
        self.logstd.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.nn.functional.elu(self.trunk(x, edge_index))
        return self.mu(h, edge_index), self.logstd(h, edge_index).clamp(max=MAX_LOGSTD)

    def mean_logvar(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        mu, logstd = self(x, edge_index)
        return mu, 2 * logstd

    def sample(self, mu: Tensor, logstd: Tensor) -> Tensor:
        """Reparameterised sample in training, the mean at evaluation."""
        if self.training:
            return mu + torch.randn_like(mu) * torch.exp(logstd)
        return mu

    def kl(self, mu: Tensor, logstd: Tensor) -> Tensor:
        """Mean over nodes of the KL divergence to the standard normal prior."""
        return gaussian_kl(mu, logstd).mean()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.trunk.in_channels}, {self.out_channels})"
