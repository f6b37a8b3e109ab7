"""The chunked conv-BN head equals the plain one (values, gradients, running stats)."""

from __future__ import annotations

import copy

import pytest
import torch

from disenkg.nn.scorers import ConvEInteraction, InteractEInteraction


@pytest.mark.parametrize("cls", ["conve", "interacte"])
def test_chunked_equals_plain(cls):
    torch.manual_seed(0)
    if cls == "conve":
        plain = ConvEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                                 input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0,
                                 image_chunk=None)
    else:
        plain = InteractEInteraction(dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                                     num_perm=2, feature_dropout=0.0, hidden_dropout=0.0,
                                     image_chunk=None)
    plain = plain.double()
    chunked = copy.deepcopy(plain)
    chunked.image_chunk = 7  # 23 images -> chunks of 7, 7, 7, 2
    g = torch.Generator().manual_seed(1)
    h = torch.randn(23, 12, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(23, 12, generator=g, dtype=torch.float64, requires_grad=True)
    a, b = plain(h, r), chunked(h, r)
    torch.testing.assert_close(b, a)
    w = torch.randn_like(a)
    pa = [h, r] + list(plain.parameters())
    pb = [h, r] + list(chunked.parameters())
    grads_a = torch.autograd.grad((a * w).sum(), pa)
    grads_b = torch.autograd.grad((b * w).sum(), pb)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(chunked.bn1, name), getattr(plain.bn1, name))
    plain.eval()
    chunked.eval()
    torch.testing.assert_close(chunked(h, r), plain(h, r))
