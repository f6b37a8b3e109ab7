"""DisenConv against an explicit per-node loop, chunked == eager, softmax normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.conv import DisenConv

N, R, K, Fd = 6, 2, 3, 5


def graph():
    # node 5 has no incoming edges (only its self loop); node 0 has three
    src = torch.tensor([1, 2, 3, 0, 4, 2, 1])
    dst = torch.tensor([0, 0, 0, 1, 2, 3, 4])
    et = torch.tensor([0, 1, 3, 2, 0, 1, 3])
    return torch.stack([src, dst]), et


def make(comp="cross", att="dot_weight", impl="chunked", chunk=3):
    torch.manual_seed(0)
    conv = DisenConv(num_entities=N, num_relations=R, num_components=K, channels=Fd,
                     composition=comp, attention=att, attention_dropout=0.0, impl=impl,
                     edge_chunk=chunk).double()
    return conv


def naive_layer(conv, x, rel, ei, et):
    """Loops over target nodes; softmax over incoming edges + self loop, per component."""
    rel_all = torch.cat([rel, conv.loop_rel])
    out = torch.zeros_like(x)
    for i in range(N):
        inc = [(int(ei[0, e]), int(et[e])) for e in range(ei.shape[1]) if int(ei[1, e]) == i]
        inc.append((i, 2 * R))
        for k in range(K):
            logits, msgs = [], []
            for j, r in inc:
                w = conv.rel_weight[r, k]
                rv = rel_all[r]
                msg = COMPOSITIONS.get(conv.composition_name)(x[j, k][None, None], rv[None, None],
                                                              w[None, None])[0, 0]
                if conv.attention_name == "dot_weight":
                    s = (x[i, k] * w * x[j, k] * w).sum()
                else:
                    s = (x[i, k] * rv * x[j, k] * rv).sum()
                logits.append(F.leaky_relu(s, 0.2))
                msgs.append(msg)
            a = torch.softmax(torch.stack(logits), 0)
            out[i, k] = (a[:, None] * torch.stack(msgs)).sum(0)
    bn = conv.bn
    flat = out.reshape(N, K * Fd)
    flat = (flat - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.tanh(flat.view(N, K, Fd)), rel @ conv.w_rel


@pytest.mark.parametrize("impl", ["chunked", "auto"])
@pytest.mark.parametrize("comp", ["sub", "mult", "cross", "corr"])
@pytest.mark.parametrize("att", ["dot_weight", "dot_emb"])
def test_against_per_node_loop(comp, att, impl):
    conv = make(comp, att, impl=impl).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, K, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(2 * R, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    ei, et = graph()
    out, rout = conv(x, rel, ei, et)
    ref, rref = naive_layer(conv, x, rel, ei, et)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(rout, rref)
    ga = torch.autograd.grad(out.sum(), (x, rel, conv.rel_weight))
    gb = torch.autograd.grad(ref.sum(), (x, rel, conv.rel_weight))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("att", ["dot_weight", "dot_emb", "cat_weight", "cat_emb", "learn"])
def test_chunked_equals_naive_train_mode(att):
    a, b = make(att=att, impl="chunked", chunk=2), make(att=att, impl="eager")
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, K, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(2 * R, Fd, generator=g, dtype=torch.float64)
    ei, et = graph()
    oa, _ = a(x, rel, ei, et)
    ob, _ = b(x, rel, ei, et)
    torch.testing.assert_close(oa, ob)
    w = torch.randn_like(oa)
    ga = torch.autograd.grad((oa * w).sum(), [x] + list(a.parameters()), allow_unused=True)
    gb = torch.autograd.grad((ob * w).sum(), [x] + list(b.parameters()), allow_unused=True)
    for u, v in zip(ga, gb):
        if v is not None:
            torch.testing.assert_close(u, v)


@pytest.mark.parametrize("comp", ["mult", "cross"])
@pytest.mark.parametrize("att", ["dot_weight", "dot_emb"])
def test_fused_equals_naive_train_mode(comp, att):
    """Same dropout mask (same RNG state): the native schedule matches the naive one."""
    a, b = make(comp, att, impl="native"), make(comp, att, impl="eager")
    a.att_drop.p = b.att_drop.p = 0.5
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, K, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(2 * R, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    ei, et = graph()
    torch.manual_seed(7)
    oa, ra, alpha_a = a(x, rel, ei, et, return_attention=True)
    torch.manual_seed(7)
    ob, rb, alpha_b = b(x, rel, ei, et, return_attention=True)
    torch.testing.assert_close(oa, ob)
    torch.testing.assert_close(alpha_a, alpha_b)
    w = torch.randn_like(oa)
    ga = torch.autograd.grad((oa * w).sum() + ra.sum(), [x, rel, *a.parameters()])
    gb = torch.autograd.grad((ob * w).sum() + rb.sum(), [x, rel, *b.parameters()])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_fused_float32_matches_float64():
    a = make(impl="native").train()
    b = make(impl="native").float().train()
    a.att_drop.p = b.att_drop.p = 0.0
    x = torch.randn(N, K, Fd, dtype=torch.float64)
    rel = torch.randn(2 * R, Fd, dtype=torch.float64)
    ei, et = graph()
    torch.testing.assert_close(b(x.float(), rel.float(), ei, et)[0],
                               a(x, rel, ei, et)[0].float(), atol=1e-5, rtol=1e-4)


def test_fused_rejects_unsupported_composition():
    with pytest.raises(ValueError,
                       match=r"impl='native' \(the fused schedule\) needs composition in"):
        make("sub", impl="native")


@pytest.mark.parametrize("impl", ["chunked", "native"])
def test_attention_sums_to_one_per_node_and_component(impl):
    conv = make(impl=impl).eval()
    x = torch.randn(N, K, Fd, dtype=torch.float64)
    rel = torch.randn(2 * R, Fd, dtype=torch.float64)
    ei, et = graph()
    _, _, alpha = conv(x, rel, ei, et, return_attention=True)
    assert alpha.shape == (ei.shape[1] + N, K)
    dst = torch.cat([ei[1], torch.arange(N)])
    sums = torch.zeros(N, K, dtype=alpha.dtype).index_add_(0, dst, alpha)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    assert torch.allclose(alpha[-1], torch.ones(K, dtype=alpha.dtype))  # node 5: loop only


def test_errors_and_repr():
    conv = make()
    ei, et = graph()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 5\), got \(6, 2, 5\)"):
        conv(torch.zeros(N, 2, Fd, dtype=torch.float64), torch.zeros(4, Fd), ei, et)
    with pytest.raises(ValueError, match="unknown composition 'add'"):
        DisenConv(num_entities=N, num_relations=R, composition="add")
    with pytest.raises(ValueError, match="unknown edge attention 'x'"):
        DisenConv(num_entities=N, num_relations=R, attention="x")
    assert repr(conv) == ("DisenConv(K=3, F=5, composition='cross', attention='dot_weight', "
                          "impl='chunked')")


def test_fused_graph_cache_follows_the_graph():
    """A different (or edited) edge_index must not reuse the cached CSR orders."""
    conv = make(impl="native").eval()
    x = torch.randn(N, K, Fd, dtype=torch.float64)
    rel = torch.randn(2 * R, Fd, dtype=torch.float64)
    ei, et = graph()
    ref = make(impl="eager").eval()
    ref.load_state_dict(conv.state_dict())
    for edges in (ei, ei.flip(0).clone(), ei[:, :4].clone()):
        types = et[:edges.shape[1]].clone()
        torch.testing.assert_close(conv(x, rel, edges, types)[0], ref(x, rel, edges, types)[0])
    edges = ei.clone()
    conv(x, rel, edges, et)
    edges[0, 0] = 5  # in place: the version changes
    torch.testing.assert_close(conv(x, rel, edges, et)[0], ref(x, rel, edges, et)[0])
