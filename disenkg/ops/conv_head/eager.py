"""The plain definition of the head with PyTorch modules: the path for unchunked calls,
evaluation with gradients and small training inputs, and the reference of the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disenkg.ops.sync_batch_norm import batch_norm

__all__ = ["conv_bn_head_eager"]


def conv_bn_head_eager(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                       bn: nn.BatchNorm2d, drop: nn.Dropout2d, fc: nn.Linear) -> Tensor:
    """``fc(drop(relu(bn(conv2d(x, weight.repeat(groups), bias, groups)))).flatten(1))``,
    materialising the feature maps ``(n, G * C, H - k + 1, W - k + 1)``."""
    w = weight.repeat(groups, 1, 1, 1) if groups > 1 else weight
    y = F.conv2d(x, w, bias, groups=groups)
    return fc(drop(torch.relu(batch_norm(bn, y))).flatten(1))
