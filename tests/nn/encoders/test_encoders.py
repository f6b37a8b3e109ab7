"""Node encoders: shapes, gradients, attention normalisation, KL and reparameterisation."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from disenkg.nn.encoders import GATEncoder, MLPEncoder, VariationalGATEncoder, gaussian_kl


def tiny_graph():
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    return x, ei


def test_mlp_against_manual():
    torch.manual_seed(0)
    m = MLPEncoder(in_channels=6, hidden_channels=4, out_channels=3, num_layers=3,
                   dropout=0.0, activation="tanh").eval()
    x, _ = tiny_graph()
    h = torch.tanh(m.lins[0](x))
    h = torch.tanh(m.lins[1](h))
    torch.testing.assert_close(m(x), m.lins[2](h))
    with pytest.raises(ValueError, match=r"expects 6 input features, got shape \(5, 7\)"):
        m(torch.zeros(5, 7))
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        MLPEncoder(in_channels=2, hidden_channels=2, out_channels=2, norm="group")
    assert repr(m) == "MLPEncoder(6, 3, num_layers=3, act='tanh', norm='none')"


@pytest.mark.parametrize("edges", ["graph", "none"])
@pytest.mark.parametrize("concat_last,residual", [(False, False), (True, True)])
def test_gat_shapes_gradients_attention(edges, concat_last, residual):
    torch.manual_seed(0)
    x, ei = tiny_graph()
    if edges == "none":
        ei = torch.empty(2, 0, dtype=torch.long)
    m = GATEncoder(in_channels=6, hidden_channels=4, out_channels=3, heads=2, out_heads=2,
                   concat_last=concat_last, residual=residual, attention_dropout=0.0)
    x = x.clone().requires_grad_()
    out, att = m(x, ei, return_attention=True)
    assert out.shape == (5, 6 if concat_last else 3) and m.out_dim == out.shape[1]
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for eidx, alpha in att:  # softmax over each target's incoming edges (with self loops)
        sums = torch.zeros(5, alpha.shape[1]).index_add_(0, eidx[1], alpha)
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_kl_closed_form_and_vgae_compatible():
    torch.manual_seed(0)
    mu, logstd = torch.randn(7, 3), 0.3 * torch.randn(7, 3)
    ref = kl_divergence(Normal(mu, logstd.exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logstd), ref)
    from torch_geometric.nn import VGAE

    x, ei = tiny_graph()
    enc = VariationalGATEncoder(in_channels=6, hidden_channels=4, out_channels=3, heads=2)
    model = VGAE(enc).eval()
    z = model.encode(x, ei)
    mu, logstd = enc(x, ei)
    torch.testing.assert_close(z, mu)  # the mean at evaluation
    ref_kl = -0.5 * torch.mean(torch.sum(1 + 2 * logstd - mu**2 - logstd.exp() ** 2, dim=1))
    torch.testing.assert_close(enc.kl(mu, logstd), ref_kl)
    torch.testing.assert_close(enc.kl(mu, logstd), model.kl_loss(mu, logstd))
    m2, lv = enc.mean_logvar(x, ei)
    torch.testing.assert_close(lv, 2 * logstd)


def test_reparameterisation_statistics():
    enc = VariationalGATEncoder(in_channels=2, out_channels=2).train()
    mu = torch.tensor([[1.0, -2.0]]).expand(200000, 2)
    logstd = torch.tensor([[0.0, -1.0]]).expand(200000, 2)
    torch.manual_seed(0)
    z = enc.sample(mu, logstd)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01, rtol=0)
    std = torch.tensor([1.0, float(torch.exp(torch.tensor(-1.0)))])
    torch.testing.assert_close(z.std(0), std, atol=0.01, rtol=0)
    enc.eval()
    assert torch.equal(enc.sample(mu, logstd), mu)
