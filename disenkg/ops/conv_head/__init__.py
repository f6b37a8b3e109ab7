"""The conv scorers' head ``fc(dropout2d(relu(BN(conv(x)))))`` as a memory-bounded op with
exact batch norm (see :mod:`disenkg.ops.conv_head.api`)."""

from disenkg.ops.conv_head.api import (
    IMPLS,
    batch_statistics,
    compute_dtype,
    conv_bn_head,
    conv_bn_head_band,
)
from disenkg.ops.conv_head.function import ConvHeadFunction, HeadPlan, PatchMoments

__all__ = ["IMPLS", "ConvHeadFunction", "HeadPlan", "PatchMoments", "batch_statistics",
           "compute_dtype", "conv_bn_head", "conv_bn_head_band"]
