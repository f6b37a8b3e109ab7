"""The Triton edge products (:mod:`disenkg.ops.edge_triton`) against per-edge Python loops,
under the interpreter on a CPU (on a GPU when one is present)."""

from __future__ import annotations

import os

import pytest
import torch

from disenkg.ops.edge_products import edge_aggregate, edge_dot
from tests.ops.test_edge_products import loop_aggregate, loop_dot, random_case

try:
    import triton  # noqa: F401

    INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
    HAS_TRITON = INTERPRET or torch.cuda.is_available()
except ImportError:  # pragma: no cover
    INTERPRET = HAS_TRITON = False
DEVICE = "cpu" if INTERPRET or not HAS_TRITON else "cuda"
pytestmark = pytest.mark.skipif(not HAS_TRITON,
                                reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")


def _case(shape, seed=0, dtype=torch.float64):
    g, ei, et, x, table, w = random_case(*shape, seed=seed, dtype=dtype)
    if DEVICE != "cpu":
        from disenkg.ops.edge_products import EdgeGraph

        g = EdgeGraph.build(ei.to(DEVICE), et.to(DEVICE), shape[0], shape[3])
        x, table, w = (t.detach().to(DEVICE).requires_grad_() for t in (x, table, w))
    return g, ei, et, x, table, w


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(7, 3, 5, 4, 40), (1, 1, 1, 1, 3), (9, 2, 70, 3, 37),
                                   (5, 4, 16, 2, 0)])
def test_values_and_grads_against_loops(shape, dtype):
    """SDDMM, both CSR SpMMs and the per-relation reduction (through the gradients);
    shapes with partial edge blocks (E = 37, 40 > 32), F = 70 > one 64-wide slice, a
    graph without edges."""
    g, ei, et, x, table, w = _case(shape, dtype=dtype)
    src, dst = ei.tolist()
    rel = et.tolist()
    tol = {} if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    out = edge_dot(x, table, g, impl="triton")
    ref = loop_dot(x, table, src, dst, rel)
    torch.testing.assert_close(out, ref, **tol)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table)),
                    torch.autograd.grad((ref * up).sum(), (x, table))):
        torch.testing.assert_close(a, b, **tol)
    out = edge_aggregate(x, table, w, g, impl="triton")
    ref = loop_aggregate(x, table, w, src, dst, rel)
    torch.testing.assert_close(out, ref, **tol)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table, w)),
                    torch.autograd.grad((ref * up).sum(), (x, table, w))):
        torch.testing.assert_close(a, b, **tol)


def test_deterministic_bits():
    """No float atomics: two runs give identical bits (float32, values and gradients)."""
    g, _, _, x, table, w = _case((11, 2, 24, 3, 90), seed=3, dtype=torch.float32)
    runs = []
    for _ in range(2):
        out = edge_dot(x, table, g, impl="triton").square().sum() + edge_aggregate(
            x, table, w, g, impl="triton").square().sum()
        runs.append((out, *torch.autograd.grad(out, (x, table, w))))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_errors():
    g, _, _, x, table, w = _case((4, 1, 3, 2, 6))
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        edge_dot(x, table, g, impl="cuda")
    if DEVICE == "cpu":
        from disenkg.ops.edge_products import triton_supported

        assert triton_supported(x) and not triton_supported(x.half())
        with pytest.raises(ValueError, match="impl='triton' needs"):
            edge_dot(x.half(), table.half(), g, impl="triton")


def test_disen_conv_triton_equals_eager():
    """The layer's fused schedule on the Triton kernels equals its eager schedule (train
    mode, same dropout masks, values and parameter gradients)."""
    from disenkg.nn.conv import DisenConv

    torch.manual_seed(0)
    kw = dict(num_entities=9, num_relations=2, num_components=2, channels=6,
              composition="cross", attention="dot_weight")
    a = DisenConv(**kw, impl="triton").double().to(DEVICE)
    b = DisenConv(**kw, impl="eager").double().to(DEVICE)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 2, 6, generator=g, dtype=torch.float64).to(DEVICE)
    rel = torch.randn(4, 6, generator=g, dtype=torch.float64).to(DEVICE)
    ei = torch.randint(0, 9, (2, 30), generator=g).to(DEVICE)
    et = torch.randint(0, 4, (30,), generator=g).to(DEVICE)
    outs = []
    for m in (a, b):
        torch.manual_seed(5)
        out, r = m(x, rel, ei, et)
        loss = out.square().sum() + r.sum()
        outs.append((out, *torch.autograd.grad(loss, list(m.parameters()))))
    for u, v in zip(*outs):
        torch.testing.assert_close(u, v)


def test_receivers_a_prefix_of_the_senders():
    """``num_receivers < N`` (an entity shard's rows and its halo): the triton SpMM onto the
    receivers has ``N_dst`` rows, the senders' gradients all ``N`` (float64)."""
    from tests.ops.test_edge_products import bipartite_case

    g, src, dst, rel, x, table, w = bipartite_case(11, 4, 3, 70, 4, 40)
    if DEVICE != "cpu":
        from disenkg.ops.edge_products import EdgeGraph

        g = EdgeGraph.build(torch.stack([g.src, g.dst]).to(DEVICE), g.rel.to(DEVICE), 11, 4,
                            num_receivers=4)
        x, table, w = (t.detach().to(DEVICE).requires_grad_() for t in (x, table, w))
    for fn, args, ref in ((edge_dot, (x, table), lambda: loop_dot(x, table, src, dst, rel)),
                          (edge_aggregate, (x, table, w),
                           lambda: loop_aggregate(x, table, w, src, dst, rel)[:4])):
        out, ref = fn(*args, g, impl="triton"), ref()
        torch.testing.assert_close(out, ref)
        up = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad((out * up).sum(), args),
                        torch.autograd.grad((ref * up).sum(), args)):
            torch.testing.assert_close(a, b)


def test_edge_attend_equals_its_three_steps():
    """edge_attend on the triton backend against the eager steps (float64, receivers a
    prefix of the senders)."""
    from torch_geometric.utils import softmax

    from disenkg.ops.edge_products import edge_attend
    from tests.ops.test_edge_products import bipartite_case

    g, *_, x, table, _ = bipartite_case(11, 4, 3, 70, 4, 40)
    if DEVICE != "cpu":
        from disenkg.ops.edge_products import EdgeGraph

        g = EdgeGraph.build(torch.stack([g.src, g.dst]).to(DEVICE), g.rel.to(DEVICE), 11, 4,
                            num_receivers=4)
        x, table = (t.detach().to(DEVICE).requires_grad_() for t in (x, table))
    agg = torch.randn_like(table).requires_grad_()

    def weights(logits):
        alpha = softmax(torch.nn.functional.leaky_relu(logits, 0.2), g.dst, num_nodes=4)
        return alpha, alpha * 0.5

    out, _ = edge_attend(x, table, agg, g, weights, impl="triton")
    want = edge_attend(x, table, agg, g, weights, impl="eager")[0]
    torch.testing.assert_close(out, want)
    up = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((out * up).sum(), (x, table, agg)),
                    torch.autograd.grad((want * up).sum(), (x, table, agg))):
        torch.testing.assert_close(a, b)
