"""Composition operators, edge attention and component attention against naive formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS, ccorr
from disenkg.nn.edge_attention import EDGE_ATTENTIONS

E, K, Fd = 6, 3, 7


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def naive_ccorr(a, b):
    n = a.shape[-1]
    out = torch.zeros_like(a)
    for j in range(n):
        out[..., j] = sum(a[..., i] * b[..., (i + j) % n] for i in range(n))
    return out


def naive_compose(name, x, r, w):
    if name == "sub":
        return x * w - r
    if name == "mult":
        return x * r * w
    if name == "cross":
        return x * r * w + x * w
    if name == "corr":
        return naive_ccorr(x * w, r.expand_as(x))
    raise KeyError(name)


TESTED_COMPOSITIONS = {"sub", "mult", "cross", "corr"}


@pytest.mark.parametrize("name", sorted(TESTED_COMPOSITIONS))
def test_composition(name):
    x, r, w = rand(E, K, Fd, seed=1), rand(E, 1, Fd, seed=2), rand(E, K, Fd, seed=3)
    out = COMPOSITIONS.get(name)(x, r, w)
    ref = naive_compose(name, x, r, w)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * g).sum(), (x, r, w)),
                    torch.autograd.grad((ref * g).sum(), (x, r, w))):
        torch.testing.assert_close(a, b)


def test_ccorr_odd_and_even_sizes():
    for n in (5, 8):
        a, b = rand(3, n, seed=4), rand(3, n, seed=5)
        torch.testing.assert_close(ccorr(a, b), naive_ccorr(a, b))


def naive_edge(name, mod, xi, xj, r, w, msg):
    if name == "dot_weight":
        return torch.stack([(xi[:, k] * w[:, k] * xj[:, k] * w[:, k]).sum(-1) for k in range(K)], 1)
    if name == "dot_emb":
        return torch.stack([(xi[:, k] * r[:, 0] * xj[:, k] * r[:, 0]).sum(-1)
                            for k in range(K)], 1)
    if name == "cat_weight":
        return torch.stack([torch.cat([xi[:, k] * w[:, k], xj[:, k] * w[:, k]], -1) @ mod.att[k]
                            for k in range(K)], 1)
    if name == "cat_emb":
        return torch.stack([torch.cat([xi[:, k] * r[:, 0], xj[:, k] * r[:, 0]], -1) @ mod.att[k]
                            for k in range(K)], 1)
    if name == "learn":
        return torch.stack([msg[:, k] @ mod.att[k] for k in range(K)], 1)
    raise KeyError(name)


TESTED_EDGE_ATTENTIONS = {"dot_weight", "dot_emb", "cat_weight", "cat_emb", "learn"}


@pytest.mark.parametrize("name", sorted(TESTED_EDGE_ATTENTIONS))
def test_edge_attention(name):
    mod = EDGE_ATTENTIONS.get(name)(num_components=K, channels=Fd).double()
    xi, xj, r, w = rand(E, K, Fd, seed=1), rand(E, K, Fd, seed=2), rand(E, 1, Fd, seed=3), \
        rand(E, K, Fd, seed=4)
    msg = rand(E, K, Fd, seed=5)
    out = mod(xi, xj, r, w, msg)
    ref = naive_edge(name, mod, xi, xj, r, w, msg)
    assert out.shape == (E, K)
    torch.testing.assert_close(out, ref)
    params = [xi, xj, r, w, msg] + list(mod.parameters())
    ga = torch.autograd.grad(out.sum(), params, allow_unused=True)
    gb = torch.autograd.grad(ref.sum(), params, allow_unused=True)
    for a, b in zip(ga, gb):
        if b is None:
            assert a is None or torch.all(a == 0)
        else:
            torch.testing.assert_close(a, b)
    assert repr(mod).startswith(type(mod).__name__)


@pytest.mark.parametrize("name", sorted(TESTED_EDGE_ATTENTIONS))
def test_relation_table_gives_the_same_logits(name):
    """The per-relation table the layer gathers per edge: <x_i, x_j * T_r> equals the
    attention's own logits (values and gradients) where it has one, and is None where
    the logits are not of that form."""
    mod = EDGE_ATTENTIONS.get(name)(num_components=K, channels=Fd).double()
    R = 4
    rel = rand(R, Fd, seed=6).requires_grad_()
    rw = rand(R, K, Fd, seed=7).requires_grad_()
    et = torch.tensor([0, 3, 1, 1, 2, 0])  # E = 6 edges, relations repeated
    xi, xj = rand(len(et), K, Fd, seed=1), rand(len(et), K, Fd, seed=2)
    table = mod.relation_table(rel, rw)
    if name not in ("dot_weight", "dot_emb"):
        assert table is None
        return
    assert table.shape == (R, K, Fd)
    got = (xi * xj * table[et]).sum(-1)
    ref = naive_edge(name, mod, xi, xj, rel[et].unsqueeze(1), rw[et], None)
    torch.testing.assert_close(got, ref)
    for a, b in zip(torch.autograd.grad(got.sum(), [rel, rw], allow_unused=True),
                    torch.autograd.grad(ref.sum(), [rel, rw], allow_unused=True)):
        if b is None:
            assert a is None or torch.all(a == 0)
        else:
            torch.testing.assert_close(a, b)


def naive_component(name, mod, sub, rel, rw, rels):
    if name == "dot_rel":
        s = torch.stack([(sub[:, k] * rw[:, k] * rel[:, k]).sum(-1) for k in range(K)], 1)
    elif name == "dot_sub":
        s = torch.stack([(sub[:, k] * rel[:, k]).sum(-1) for k in range(K)], 1)
    elif name == "cat_rel":
        s = torch.stack([mod.fc(torch.cat([sub[:, k] * rw[:, k], rel[:, k]], -1))[:, 0]
                         for k in range(K)], 1)
    elif name == "cat_sub":
        s = torch.stack([mod.fc(torch.cat([sub[:, k], rel[:, k]], -1))[:, 0] for k in range(K)], 1)
    elif name == "learn":
        s = torch.stack([mod.theta[int(r)] for r in rels])
    else:
        raise KeyError(name)
    return F.leaky_relu(s, 0.2)


TESTED_COMPONENT_ATTENTIONS = {"dot_rel", "dot_sub", "cat_rel", "cat_sub", "learn"}


@pytest.mark.parametrize("name", sorted(TESTED_COMPONENT_ATTENTIONS))
def test_component_attention(name):
    mod = COMPONENT_ATTENTIONS.get(name)(num_components=K, channels=Fd, num_relations=4).double()
    B = 5
    sub, rw = rand(B, K, Fd, seed=1), rand(B, K, Fd, seed=3)
    rel = rand(B, 1, Fd, seed=2).expand(B, K, Fd)
    rels = torch.tensor([0, 7, 3, 3, 1])
    out = mod(sub, rel, rw, rels)
    ref = naive_component(name, mod, sub, rel, rw, rels)
    assert out.shape == (B, K)
    torch.testing.assert_close(out, ref)
    ps = [sub, rw] + list(mod.parameters())
    for a, b in zip(torch.autograd.grad(out.sum(), ps, allow_unused=True),
                    torch.autograd.grad(ref.sum(), ps, allow_unused=True)):
        if b is not None:
            torch.testing.assert_close(a, b)
