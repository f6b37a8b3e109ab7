r"""Multi-layer perceptron encoder.

.. math::
    h^{(l+1)} = \mathrm{drop}(\sigma(\mathrm{norm}(W^{(l)} h^{(l)} + b^{(l)}))),\qquad
    z = W^{(L)} h^{(L)} + b^{(L)}
"""

from __future__ import annotations

from torch import Tensor, nn

from disenkg.utils import Registry

__all__ = ["ACTIVATIONS", "NORMS", "MLPEncoder"]

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in (("relu", nn.ReLU), ("elu", nn.ELU), ("gelu", nn.GELU), ("tanh", nn.Tanh),
                    ("leaky_relu", nn.LeakyReLU)):
    ACTIVATIONS.register(_name)(_cls)

NORMS: Registry = Registry("norm")
NORMS.register("none")(lambda dim: nn.Identity())
NORMS.register("batch")(lambda dim: nn.BatchNorm1d(dim))
NORMS.register("layer")(lambda dim: nn.LayerNorm(dim))


class MLPEncoder(nn.Module):
    """Per-node (or per-sample) MLP.

    Args:
        in_channels (int): input features.
        hidden_channels (int): width of hidden layers.
        out_channels (int): latent size.
        num_layers (int): linear layers (>= 1). (default: ``2``)
        dropout (float): dropout after each hidden layer and on the input. (default: ``0.5``)
        activation (str): ``relu``, ``elu``, ``gelu``, ``tanh`` or ``leaky_relu``.
            (default: ``"relu"``)
        norm (str): ``none``, ``batch`` or ``layer`` on hidden layers. (default: ``"none"``)

    Shapes:
        ``(*, in_channels) -> (*, out_channels)`` (``batch`` norm needs 2-D input).
    """

    def __init__(self, *, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2, dropout: float = 0.5, activation: str = "relu",
                 norm: str = "none") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(NORMS.get(norm)(d) for d in dims[1:-1])
        self.act = ACTIVATIONS.get(activation)()
        self.dropout = nn.Dropout(dropout)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_layers, self.activation_name, self.norm_name = num_layers, activation, norm
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in list(self.lins) + list(self.norms):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"MLPEncoder expects {self.in_channels} input features, got "
                             f"shape {tuple(x.shape)}")
        x = self.dropout(x)
        for i, lin in enumerate(self.lins):
            x = lin(x)
            if i < len(self.norms):
                x = self.dropout(self.act(self.norms[i](x)))
        return x

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, act={self.activation_name!r}, "
                f"norm={self.norm_name!r})")
