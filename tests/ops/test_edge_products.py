"""Relation-weighted edge products: native kernels against per-edge Python loops."""

from __future__ import annotations

import pytest
import torch

from disenkg.datasets import KGDataset
from disenkg.ops import native
from disenkg.ops.edge_products import EdgeGraph, edge_aggregate, edge_dot

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"native kernels: {native.unavailable_reason()}")


def loop_dot(x, table, src, dst, rel):
    out = x.new_zeros(len(src), x.shape[1]) + 0 * (x.sum() + table.sum())  # graph if E = 0
    for e in range(len(src)):
        out[e] = (x[dst[e]] * x[src[e]] * table[rel[e]]).sum(-1)
    return out


def loop_aggregate(x, table, w, src, dst, rel):
    out = torch.zeros_like(x) + 0 * (x.sum() + table.sum() + w.sum())
    for e in range(len(src)):
        out[dst[e]] += w[e].unsqueeze(-1) * x[src[e]] * table[rel[e]]
    return out


def random_case(N, K, F, R, E, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N, (2, E), generator=g)
    et = torch.randint(0, R, (E,), generator=g)
    x = torch.randn(N, K, F, generator=g, dtype=dtype, requires_grad=True)
    table = torch.randn(R, K, F, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(E, K, generator=g, dtype=dtype, requires_grad=True)
    return EdgeGraph.build(ei, et, N, R), ei, et, x, table, w


def check_against_loops(g, src, dst, rel, x, table, w, impl, n_dst=None):
    """edge_dot and edge_aggregate with ``impl`` against the loops: values and the
    gradients of every input (the aggregate's first ``n_dst`` rows: the receivers)."""
    out = edge_dot(x, table, g, impl=impl)
    ref = loop_dot(x, table, src, dst, rel)
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table)),
                    torch.autograd.grad((ref * up).sum(), (x, table))):
        torch.testing.assert_close(a, b)
    out = edge_aggregate(x, table, w, g, impl=impl)
    ref = loop_aggregate(x, table, w, src, dst, rel)[:n_dst]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table, w)),
                    torch.autograd.grad((ref * up).sum(), (x, table, w))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(7, 3, 5, 4, 40), (1, 1, 1, 1, 3), (9, 2, 33, 3, 17),
                                   (5, 4, 16, 2, 0)])
def test_values_and_grads_against_loops(shape):
    g, ei, et, x, table, w = random_case(*shape)
    src, dst = ei.tolist()
    check_against_loops(g, src, dst, et.tolist(), x, table, w, "native")


def bipartite_case(N, n_dst, K, F, R, E, seed=0):
    """Senders in ``[0, N)``, receivers the first ``n_dst`` nodes (a shard and its halo)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, N, (E,), generator=g)
    dst = torch.randint(0, max(n_dst, 1), (E,), generator=g)
    et = torch.randint(0, R, (E,), generator=g)
    x = torch.randn(N, K, F, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(R, K, F, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(E, K, generator=g, dtype=torch.float64, requires_grad=True)
    return (EdgeGraph.build(torch.stack([src, dst]), et, N, R, num_receivers=n_dst),
            src.tolist(), dst.tolist(), et.tolist(), x, table, w)


@pytest.mark.parametrize("impl", ["native", "eager"])
@pytest.mark.parametrize("shape", [(11, 4, 3, 5, 4, 40), (6, 1, 2, 7, 2, 9), (5, 0, 2, 3, 2, 0)])
def test_receivers_a_prefix_of_the_senders(impl, shape):
    """``num_receivers < N``: the aggregate has ``N_dst`` rows and equals the loop's first
    ``N_dst`` rows; the senders' gradients cover all ``N`` rows (values and gradients,
    float64)."""
    g, src, dst, rel, x, table, w = bipartite_case(*shape)
    check_against_loops(g, src, dst, rel, x, table, w, impl, n_dst=shape[1])


@pytest.mark.parametrize("impl", ["native", "eager"])
@pytest.mark.parametrize("shape", [(11, 4, 3, 5, 4, 40), (9, 9, 2, 33, 3, 17)])
def test_edge_attend_equals_its_three_steps(impl, shape):
    """edge_attend (logits, a per-edge map with a receiver softmax and a fixed mask,
    aggregation) against edge_dot / the map / edge_aggregate: values, alpha and the
    gradients of x and both tables (float64; receivers a prefix of the senders)."""
    from torch_geometric.utils import softmax

    from disenkg.ops.edge_products import edge_attend

    N, n_dst = shape[:2]
    g, *_, x, table, _ = bipartite_case(*shape)
    agg = torch.randn_like(table, requires_grad=True)
    mask = (torch.rand(g.num_edges, x.shape[1], generator=torch.Generator().manual_seed(1))
            > 0.3).double() / 0.7

    def weights(logits):
        alpha = softmax(torch.nn.functional.leaky_relu(logits, 0.2), g.dst, num_nodes=n_dst)
        return alpha, alpha * mask

    out, alpha = edge_attend(x, table, agg, g, weights, impl=impl)
    want_alpha, w = weights(edge_dot(x, table, g, impl="eager"))
    want = edge_aggregate(x, agg, w, g, impl="eager")
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(alpha, want_alpha.detach())
    assert not alpha.requires_grad
    up = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table, agg)),
                    torch.autograd.grad((want * up).sum(), (x, table, agg))):
        torch.testing.assert_close(a, b)


def test_gradcheck():
    g, _, _, x, table, w = random_case(6, 2, 3, 3, 15, seed=1)
    assert torch.autograd.gradcheck(lambda x, t: edge_dot(x, t, g, impl="native"), (x, table))
    assert torch.autograd.gradcheck(lambda x, t, w: edge_aggregate(x, t, w, g, impl="native"),
                                    (x, table, w))


def test_float32_and_torch_reference_on_a_real_kg(umls_path):
    """UMLS graph (all training edges + inverses): native == torch reference."""
    ds = KGDataset.load(umls_path)
    ei, et = ds.graph()
    g = EdgeGraph.build(ei.flip(0), et, ds.num_entities, 2 * ds.num_relations)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ds.num_entities, 3, 20, generator=gen, requires_grad=True)
    table = torch.randn(2 * ds.num_relations, 3, 20, generator=gen, requires_grad=True)
    w = torch.rand(g.num_edges, 3, generator=gen) * (torch.rand(g.num_edges, 3) > 0.4)
    w.requires_grad_(True)
    for fn, args in ((edge_dot, (x, table)), (edge_aggregate, (x, table, w))):
        a, b = fn(*args, g, impl="native"), fn(*args, g, impl="eager")
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        up = torch.randn_like(a)
        for ga, gb in zip(torch.autograd.grad((a * up).sum(), args),
                          torch.autograd.grad((b * up).sum(), args)):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-3)


def test_errors():
    g, ei, et, x, table, w = random_case(7, 3, 5, 4, 40)
    with pytest.raises(ValueError, match=r"x must have shape \(7, K, F\), got \(6, 3, 5\)"):
        edge_dot(x[:6], table, g)
    with pytest.raises(ValueError, match=r"table must have shape \(4, 3, 5\), got \(4, 3, 4\)"):
        edge_dot(x, table[..., :4], g)
    with pytest.raises(ValueError, match=r"weight must have shape \(40, 3\), got \(40, 2\)"):
        edge_aggregate(x, table, w[:, :2], g)
    with pytest.raises(TypeError, match="share one dtype"):
        edge_dot(x, table.float(), g)
    with pytest.raises(ValueError, match=r"edge_type values must lie in \[0, 3\)"):
        EdgeGraph.build(ei, et, 7, 3)
    with pytest.raises(ValueError, match=r"edge_index\[1\] values must lie in \[0, 2\)"):
        EdgeGraph.build(ei, et, 7, 4, num_receivers=2)
    with pytest.raises(ValueError, match=r"num_receivers must lie in \[0, 7\], got 8"):
        EdgeGraph.build(ei, et, 7, 4, num_receivers=8)
    with pytest.raises(ValueError, match=r"at most 2147483647 nodes and relations per graph, "
                                         r"got 2147483648 nodes"):
        EdgeGraph.build(ei, et, 2**31, 4)
    with pytest.raises(ValueError, match="impl='native' needs CPU float32/float64"):
        edge_dot(x.half(), table.half(), g, impl="native")
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        edge_dot(x, table, g, impl="cuda")


def test_disabled_kernels_fall_back_and_explain(monkeypatch):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setenv("DISENKG_NATIVE", "0")
    assert not native.available()
    assert native.unavailable_reason() == "disabled by DISENKG_NATIVE=0"
    g, _, _, x, table, _ = random_case(5, 2, 3, 2, 9)
    torch.testing.assert_close(edge_dot(x, table, g, impl="auto"),
                               edge_dot(x, table, g, impl="eager"))
    with pytest.raises(native.NativeUnavailableError, match="DISENKG_NATIVE=0"):
        edge_dot(x, table, g, impl="native")


def test_build_error_names_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path))
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal: no such thing' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(native.NativeUnavailableError, match="fatal: no such thing"):
        native.load()
    assert not list((tmp_path / "native").glob("*.so*"))  # no partial library left


def test_native_table_gradients_are_reproducible():
    """The relation sums of the fused SpMM use per-thread accumulators over a static node
    schedule: repeated backward passes give bit-identical table gradients."""
    g, _, _, x, table, w = random_case(3000, 3, 8, 5, 20000, seed=4)
    x32, t32, w32 = (v.detach().float().requires_grad_() for v in (x, table, w))
    runs = []
    for _ in range(3):
        out = edge_dot(x32, t32, g, impl="native").sum() + edge_aggregate(
            x32, t32, w32, g, impl="native").square().sum()
        runs.append(torch.autograd.grad(out, (x32, t32, w32)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
