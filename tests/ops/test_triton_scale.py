"""The Triton kernels at FB15k-237's size on a GPU (B = 2048 queries, K = 3, F = 200
against N = 14 541 entities; 544 230 edges over 474 relation ids), against float64
PyTorch references on the same device; on the CPU the same checks run through the
interpreter at a small size, so CI exercises every line of them."""

from __future__ import annotations

import os

import pytest
import torch

from disenkg.ops import mixture_bce
from disenkg.ops.edge_products import EdgeGraph, edge_aggregate, edge_dot

try:
    import triton  # noqa: F401

    INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
    GPU = torch.cuda.is_available() and not INTERPRET
    HAS_TRITON = INTERPRET or GPU
except ImportError:  # pragma: no cover
    INTERPRET = GPU = HAS_TRITON = False
DEVICE = "cuda" if GPU else "cpu"
pytestmark = pytest.mark.skipif(not HAS_TRITON,
                                reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")

FB15K237 = dict(B=2048, K=3, F=200, N=14541, E=544230, R=474)
SMALL = dict(B=37, K=3, F=24, N=70, E=300, R=9)
SIZES = [pytest.param(SMALL, id="small"),
         pytest.param(FB15K237, id="fb15k237",
                      marks=pytest.mark.skipif(not GPU, reason="full size needs a GPU"))]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in float64 (norms over all elements)."""
    a, b = a.double(), b.double()
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _loss_case(s: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, K, F, N = s["B"], s["K"], s["F"], s["N"]
    q = torch.randn(B, K, F, generator=g) * 0.3
    e = torch.randn(N, K, F, generator=g) * 0.3
    att = torch.randn(B, K, generator=g)
    bias = torch.randn(N, generator=g) * 0.1
    rows = torch.arange(B).repeat_interleave(3)
    cols = torch.randint(0, N, (3 * B,), generator=g)
    leaves = [t.to(DEVICE).requires_grad_() for t in (q, e, att, bias)]
    return leaves, (rows.to(DEVICE), cols.to(DEVICE))


@pytest.mark.parametrize("size", SIZES)
def test_triton_loss_at_scale(size):
    """Loss and gradients (query, entity, attention, bias) of the fused sweep against the
    float64 materialising reference (relative errors over whole tensors) in float32 and
    with bf16 tensor-core inputs; the deterministic schedule gives identical bits twice."""
    leaves, tgt = _loss_case(size)
    kw = dict(label_smoothing=0.1, order="after")
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    q, e, att, bias = ref_leaves
    ref = mixture_bce(q, e, att, tgt, bias=bias, impl="eager", **kw)
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    q, e, att, bias = leaves
    # (loss, gradient) relative tolerances; measured at the small size: float32 3e-8 and
    # <= 7e-6 (attention), bf16 1.4e-4 and <= 8.4e-3
    for precision, tol, gtol in (("fp32", 1e-6, 1e-4), ("bf16", 2e-3, 3e-2)):
        out = mixture_bce(q, e, att, tgt, bias=bias, impl="triton", precision=precision, **kw)
        grads = torch.autograd.grad(out, leaves)
        assert _rel_err(out, ref) <= tol, (precision, _rel_err(out, ref))
        for name, a, b in zip(("query", "entity", "attention", "bias"), grads, ref_grads):
            assert _rel_err(a, b) <= gtol, (precision, name, _rel_err(a, b))
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        runs = []
        for _ in range(2):
            out = mixture_bce(q, e, att, tgt, bias=bias, impl="triton", **kw)
            runs.append((out, *torch.autograd.grad(out, leaves)))
    finally:
        torch.use_deterministic_algorithms(prev)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert _rel_err(runs[0][0], ref) <= 1e-6


def _edge_case(s: dict, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N, K, F, E, R = s["N"], s["K"], s["F"], s["E"], s["R"]
    ei = torch.randint(0, N, (2, E), generator=g).to(DEVICE)
    et = torch.randint(0, R, (E,), generator=g).to(DEVICE)
    graph = EdgeGraph.build(ei, et, N, R)
    x = (torch.randn(N, K, F, generator=g, dtype=dtype) * 0.3).to(DEVICE).requires_grad_()
    table = (torch.randn(R, K, F, generator=g, dtype=dtype) * 0.3).to(DEVICE).requires_grad_()
    w = torch.rand(E, K, generator=g, dtype=dtype).to(DEVICE).requires_grad_()
    return graph, x, table, w


@pytest.mark.parametrize("size", SIZES)
def test_triton_edge_products_at_scale(size):
    """SDDMM, the CSR SpMMs and the per-relation reduction (through the gradients) against
    eager float64 on the same device: float64 inputs exact to 1e-12, float32 within 1e-5;
    float32 twice gives identical bits (no float atomics)."""
    graph, x, table, w = _edge_case(size, torch.float64)
    up_dot = torch.randn(graph.num_edges, size["K"], dtype=torch.float64, device=DEVICE)
    up_agg = torch.randn_like(x)

    def run(impl, x, table, w):
        d = edge_dot(x, table, graph, impl=impl)
        a = edge_aggregate(x, table, w, graph, impl=impl)
        loss = (d * up_dot.to(d.dtype)).sum() + (a * up_agg.to(a.dtype)).sum()
        return (d, a, *torch.autograd.grad(loss, (x, table, w)))

    ref = run("eager", x, table, w)
    for got, want in zip(run("triton", x, table, w), ref):
        assert _rel_err(got, want) <= 1e-12
    leaves32 = [t.detach().float().requires_grad_() for t in (x, table, w)]
    first, second = run("triton", *leaves32), run("triton", *leaves32)
    for got, want in zip(first, ref):
        assert _rel_err(got, want) <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(first, second))
