"""Graph convolution layers."""

from disenkg.nn.conv.disen_conv import DisenConv

__all__ = ["DisenConv"]
