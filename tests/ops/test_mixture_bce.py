"""mixture_bce: every impl against the float64 materialising reference."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from disenkg.ops import MixtureBCELoss, mixture_bce
from disenkg.ops.mixture_bce.chunked import chunk_size


def naive(q, e, att, y, bias=None, eps=0.0, order="after", pos_weight=1.0):
    """The textbook formula, written out with explicit loops over k (float64):
    ``-(w t log p + (1 - t) log(1 - p))`` with ``w = pos_weight``."""
    B, K, _ = q.shape
    N = e.shape[0]
    t = (1 - eps) * y + 1.0 / N if eps > 0 else y
    a = torch.softmax(att, -1)
    xs = [q[:, k] @ e[:, k].T + (bias if bias is not None else 0) for k in range(K)]
    if order == "before":
        z = sum(a[:, k : k + 1] * xs[k] for k in range(K))
        if pos_weight == 1.0:
            return F.binary_cross_entropy_with_logits(z, t, reduction="none")
        p = torch.sigmoid(z)
    else:
        p = sum(a[:, k : k + 1] * torch.sigmoid(xs[k]) for k in range(K))
    return -(pos_weight * t * torch.log(p) + (1 - t) * torch.log1p(-p))


def make(B=5, K=3, Fd=7, N=37, dtype=torch.float64, seed=0, density=0.2, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, K, Fd, generator=g, dtype=dtype) * scale).requires_grad_()
    e = (torch.randn(N, K, Fd, generator=g, dtype=dtype) * scale).requires_grad_()
    att = torch.randn(B, K, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(N, generator=g, dtype=dtype).requires_grad_()
    y = (torch.rand(B, N, generator=g) < density).to(dtype)
    return q, e, att, bias, y


def grads(loss, *xs):
    return torch.autograd.grad(loss, [x for x in xs if x is not None], allow_unused=True)


IMPLS = ["eager", "chunked"]
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
try:  # the triton impl: under the interpreter on CPU tensors, else on a GPU when present
    import triton  # noqa: F401

    HAS_TRITON = INTERPRET or torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_TRITON = False
#: where the Triton tests put their tensors
TRITON_DEVICE = "cuda" if HAS_TRITON and not INTERPRET else "cpu"


def make_t(**kw):
    """:func:`make` on :data:`TRITON_DEVICE` (leaves, gradients as requested)."""
    return tuple(None if x is None else
                 x.detach().to(TRITON_DEVICE).requires_grad_(x.requires_grad)
                 for x in make(**kw))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("use_bias,eps", [(True, 0.1), (False, 0.0), (True, 0.0)])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_naive_float64(impl, order, use_bias, eps, sparse, reduction):
    q, e, att, bias, y = make()
    b = bias if use_bias else None
    ref = naive(q, e, att, y, b, eps, order)
    tgt = tuple(y.nonzero().T) if sparse else y
    out = mixture_bce(q, e, att, tgt, bias=b, label_smoothing=eps, order=order,
                      reduction=reduction, impl=impl, chunk_budget_bytes=4096)
    ref_red = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    torch.testing.assert_close(out, ref_red, rtol=1e-9, atol=1e-10)
    w = torch.randn_like(ref) if reduction == "none" else torch.tensor(1.7, dtype=ref.dtype)
    g_ref = grads((ref_red * w).sum(), q, e, att, b)
    g_out = grads((out * w).sum(), q, e, att, b)
    for name, gr, go in zip(["query", "entity", "att", "bias"], g_ref, g_out):
        torch.testing.assert_close(go, gr, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_row_blocks_match_naive(monkeypatch, order, sparse, reduction):
    """Tiles of 2 queries (B = 5: blocks 2, 2, 1) by a few entities: the gradients of
    later row blocks add to the entity and bias gradients of the first."""
    from disenkg.ops.mixture_bce import chunked

    monkeypatch.setattr(chunked, "ROW_BLOCK", 2)
    q, e, att, bias, y = make()
    ref = naive(q, e, att, y, bias, 0.1, order)
    tgt = tuple(y.nonzero().T) if sparse else y
    out = mixture_bce(q, e, att, tgt, bias=bias, label_smoothing=0.1, order=order,
                      reduction=reduction, impl="chunked", chunk_budget_bytes=2048)
    ref_red = ref.mean() if reduction == "mean" else ref
    torch.testing.assert_close(out, ref_red, rtol=1e-9, atol=1e-10)
    w = torch.randn_like(ref) if reduction == "none" else torch.tensor(1.7, dtype=ref.dtype)
    for gr, go in zip(grads((ref_red * w).sum(), q, e, att, bias),
                      grads((out * w).sum(), q, e, att, bias)):
        torch.testing.assert_close(go, gr, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("order", ["after", "before"])
def test_float32_close_to_float64(order):
    q, e, att, bias, y = make(B=9, K=3, Fd=13, N=101)
    ref = naive(q, e, att, y, bias, 0.1, order).mean()
    g_ref = grads(ref, q, e, att, bias)
    q32, e32, a32, b32 = (x.detach().float().requires_grad_() for x in (q, e, att, bias))
    out = mixture_bce(q32, e32, a32, y.float(), bias=b32, label_smoothing=0.1, order=order,
                      impl="chunked", chunk_budget_bytes=8192)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    for gr, go in zip(g_ref, grads(out, q32, e32, a32, b32)):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_k1_both_orders_equal_bce_with_logits(impl):
    q, e, att, bias, y = make(K=1)
    for order in ("after", "before"):
        ref = F.binary_cross_entropy_with_logits(q[:, 0] @ e[:, 0].T + bias, y)
        out = mixture_bce(q, e, att, y, bias=bias, order=order, impl=impl)
        torch.testing.assert_close(out, ref)
        for gr, go in zip(grads(ref, q, e, bias), grads(out, q, e, bias)):
            torch.testing.assert_close(go, gr)


@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("sparse", [False, True])
def test_gradcheck(order, sparse):
    q, e, att, bias, y = make(B=3, K=2, Fd=3, N=5, density=0.4)
    tgt = tuple(y.nonzero().T) if sparse else y

    def fn(q, e, att, bias):
        return mixture_bce(q, e, att, tgt, bias=bias, label_smoothing=0.1, order=order,
                           impl="chunked", chunk_budget_bytes=64)

    assert torch.autograd.gradcheck(fn, (q, e, att, bias))


def test_extreme_logits_stay_finite():
    q, e, att, bias, y = make(B=4, K=3, Fd=1, N=6)
    with torch.no_grad():
        big = torch.tensor([80.0, -80.0, 40.0, -40.0], dtype=q.dtype)
        q.copy_(big.view(4, 1, 1).expand(4, 3, 1))
        e.fill_(1.0)
        bias.zero_()
    # Naive chain: sigmoid -> mix -> BCELoss saturates (log 0 clamps to -100 in torch).
    q32, e32 = q.detach().float(), e.detach().float()
    p = torch.sigmoid(torch.einsum("bkf,nkf->bkn", q32, e32)).mean(1)
    naive_loss = F.binary_cross_entropy(p, 1 - y.float(), reduction="none")
    assert (naive_loss >= 100).any()  # the clamp at log(0) = -100
    for impl in IMPLS:
        out = mixture_bce(q, e, att, 1 - y, bias=bias, impl=impl, reduction="none")
        assert torch.isfinite(out).all()
        # exact value for x = 80, target 0: softplus(80) = 80 (+ 1.8e-35)
        neg = out[0, (1 - y[0]) == 0]
        torch.testing.assert_close(neg, torch.full_like(neg, 80.0))
        g = grads(out.sum(), q, e, att)
        assert all(torch.isfinite(t).all() for t in g)


def test_sparse_duplicates_count_once():
    q, e, att, bias, y = make()
    rows, cols = y.nonzero().T
    a = mixture_bce(q, e, att, (rows, cols), impl="chunked")
    b = mixture_bce(q, e, att, (torch.cat([rows, rows]), torch.cat([cols, cols])), impl="chunked")
    torch.testing.assert_close(a, b)


def test_bool_and_int_targets_accepted():
    q, e, att, bias, y = make()
    ref = mixture_bce(q, e, att, y)
    torch.testing.assert_close(mixture_bce(q, e, att, y.bool()), ref)
    torch.testing.assert_close(mixture_bce(q, e, att, y.long()), ref)


def test_chunk_size_respects_budget():
    c = chunk_size(2048, 3, 14541, 4, budget=64 * 2**20)
    assert 16 <= c < 14541
    assert 6 * 2048 * 3 * c * 4 <= 64 * 2**20


def test_no_grad_forward_skips_gradients():
    q, e, att, bias, y = make()
    with torch.no_grad():
        out = mixture_bce(q, e, att, y, impl="chunked")
    assert out.grad_fn is None


class TestErrors:
    def setup_method(self):
        self.q, self.e, self.att, self.bias, self.y = make()

    def call(self, **kw):
        args = dict(query=self.q, entity=self.e, att_logits=self.att, target=self.y)
        args.update(kw)
        return mixture_bce(**args)

    def test_target_shape_names_both(self):
        with pytest.raises(ValueError, match=r"\(B, N\) = \(5, 37\).*\(5,\)"):
            self.call(target=torch.zeros(5))

    def test_entity_shape(self):
        with pytest.raises(ValueError, match=r"\(N, 3, 7\).*\(37, 3, 8\)"):
            self.call(entity=torch.zeros(37, 3, 8, dtype=torch.float64))

    def test_att_shape(self):
        with pytest.raises(ValueError, match=r"att_logits.*\(5, 3\).*\(5, 2\)"):
            self.call(att_logits=torch.zeros(5, 2, dtype=torch.float64))

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=r"bias.*\(37,\).*\(36,\)"):
            self.call(bias=torch.zeros(36, dtype=torch.float64))

    def test_target_out_of_range(self):
        with pytest.raises(ValueError, match=r"\[0, 1\].*2\.0"):
            self.call(target=self.y * 2)

    def test_target_nan(self):
        y = self.y.clone()
        y[0, 0] = float("nan")
        with pytest.raises(ValueError, match="target contains 1 non-finite"):
            self.call(target=y)

    def test_query_nonfinite(self):
        q = self.q.detach().clone()
        q[0, 0, 0] = float("inf")
        with pytest.raises(ValueError, match="query contains 1 non-finite"):
            self.call(query=q)

    def test_dtype_mismatch(self):
        with pytest.raises(ValueError, match="entity has dtype torch.float32"):
            self.call(entity=self.e.detach().float())

    @pytest.mark.parametrize("kw,choices", [
        (dict(order="middle"), "after"), (dict(impl="cuda"), "chunked"),
        (dict(reduction="avg"), "mean"),
    ])
    def test_unknown_choice_lists_valid(self, kw, choices):
        with pytest.raises(ValueError, match=choices):
            self.call(**kw)

    @pytest.mark.parametrize("eps", [-0.1, 1.0])
    def test_bad_smoothing(self, eps):
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
            self.call(label_smoothing=eps)

    def test_sparse_out_of_range(self):
        with pytest.raises(ValueError, match=r"cols must lie in \[0, 37\)"):
            self.call(target=(torch.tensor([0]), torch.tensor([37])))

    def test_sparse_length_mismatch(self):
        with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
            self.call(target=(torch.tensor([0, 1]), torch.tensor([3])))


def test_module_wrapper_and_repr():
    q, e, att, bias, y = make()
    mod = MixtureBCELoss(label_smoothing=0.1, order="before", impl="chunked")
    assert repr(mod) == (
        "MixtureBCELoss(order='before', label_smoothing=0.1, reduction='mean', impl='chunked', "
        "precision='fp32')"
    )
    ref = naive(q, e, att, y, bias, 0.1, "before").mean()
    torch.testing.assert_close(mod(q, e, att, y, bias), ref)
    with pytest.raises(ValueError, match="choose one of"):
        MixtureBCELoss(order="x")
    with pytest.raises(ValueError, match="unknown precision"):
        MixtureBCELoss(precision="fp16")


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("order,sparse", [("after", True), ("before", False)])
def test_triton_schedules_agree(order, sparse, deterministic):
    """The fused sweep (loss and gradients in the forward pass, atomics), the deterministic
    one (owner programs, no float atomics) and the separate backward all equal the float64
    definition, for shapes that leave partial tiles on every axis (B=37 > 32, N=131 > 2*64,
    F=45 > 32)."""
    from disenkg.ops.mixture_bce import triton_kernels as tk
    from disenkg.ops.mixture_bce.inputs import make_target

    q, e, att, bias, y = make_t(B=37, K=3, Fd=45, N=131, dtype=torch.float32, seed=4)
    tgt = tuple(y.nonzero().T) if sparse else y
    kw = dict(bias=bias, label_smoothing=0.1, order=order)
    qd, ed, ad, bd = (x.detach().double().requires_grad_() for x in (q, e, att, bias))
    ref = mixture_bce(qd, ed, ad, y.double(), **{**kw, "bias": bd}, impl="eager")
    g_ref = grads(ref, qd, ed, ad, bd)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        out = mixture_bce(q, e, att, tgt, **kw, impl="triton")  # fused: grads in forward
        g_out = grads(out, q, e, att, bias)
    finally:
        torch.use_deterministic_algorithms(prev)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    for gr, go in zip(g_ref, g_out):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-7)
    # the kernels directly: both schedules give the same dense-part gradients, and the
    # deterministic one gives identical bits when run twice
    t = make_target(y, 37, 131, 0.1, q.dtype, q.device)
    loga = att.log_softmax(-1)
    runs = [tk.triton_grads(q, e, loga, bias, t, 0.5, with_loss=True, deterministic=d)
            for d in (False, True, True)]
    for a, b in zip(runs[0], runs[1]):  # fp32 sums in two orders: ~1e-7 of the largest
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6 * float(b.abs().max()))
    assert all(torch.equal(a, b) for a, b in zip(runs[1], runs[2]))


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
@pytest.mark.parametrize("K,once", [(1, True), (4, True), (1, False), (4, False), (9, False)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_triton_once_and_recompute_sweeps(monkeypatch, K, once, deterministic):
    """Both gradient sweeps (logit tiles computed once and kept, ``K <= ONCE_MAX_K``; or
    computed twice) against the float64 definition, with logits beyond +-30 so the
    responsibilities saturate, a dense weight, partial tiles (B=33, N=70, F=37)."""
    from disenkg.ops.mixture_bce import triton_kernels as tk
    from disenkg.ops.mixture_bce.inputs import make_target

    assert K <= tk.ONCE_MAX_K or not once  # K = 9 > ONCE_MAX_K always recomputes
    if not once:
        monkeypatch.setattr(tk, "ONCE_MAX_K", 0)
    q, e, att, bias, y = make_t(B=33, K=K, Fd=37, N=70, dtype=torch.float32, seed=K,
                                scale=1.6)
    g = torch.Generator().manual_seed(1)
    w = torch.rand(33, 70, generator=g).to(q.device)
    t = make_target(y, 33, 70, 0.1, q.dtype, q.device)
    loga = att.log_softmax(-1)
    loss, gq, ge, gl, gb = tk.triton_grads(q, e, loga, bias, t, w, with_loss=True,
                                           deterministic=deterministic)
    qd, ed, ld, bd = (x.detach().double().requires_grad_() for x in (q, e, loga, bias))
    x = torch.einsum("bkf,nkf->bkn", qd, ed) + bd
    td = t.dense.double() if t.dense is not None else torch.full((33, 70), t.t0).double()
    l1 = torch.logsumexp(ld.unsqueeze(-1) + F.logsigmoid(x), 1)
    l0 = torch.logsumexp(ld.unsqueeze(-1) + F.logsigmoid(-x), 1)
    ref = -(td * l1 + (1 - td) * l0)
    refs = torch.autograd.grad((ref * w.double()).sum(), (qd, ed, ld, bd))
    assert x.abs().max() > 30  # saturated sigmoids are exercised
    torch.testing.assert_close(loss.double(), ref.sum(), rtol=1e-5, atol=1e-5)
    for got, want in zip((gq, ge, gl, gb), refs):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
@pytest.mark.parametrize("dense", [True, False])
def test_triton_extreme_logits(dense):
    """Logits up to +-200 (``sigma`` and ``1 - sigma`` below float32's normal range) stay
    finite in the kept-tile sweep and match the float64 reference."""
    x = torch.tensor([200.0, -200.0, 80.0, -80.0, 30.0, -30.0]).view(6, 1, 1)
    q = (x * torch.tensor([1.0, 0.5, -1.0]).view(1, 3, 1)).to(TRITON_DEVICE)
    e = torch.ones(10, 3, 1, device=TRITON_DEVICE)
    g = torch.Generator().manual_seed(0)
    att = torch.randn(6, 3, generator=g).to(TRITON_DEVICE)
    y = (torch.rand(6, 10, generator=g) < 0.3).float().to(TRITON_DEVICE)
    tgt = y if dense else tuple(y.nonzero().T)
    kw = dict(reduction="sum", label_smoothing=0.1)
    leaves = [t.clone().requires_grad_() for t in (q, e, att)]
    out = mixture_bce(*leaves, tgt, impl="triton", **kw)
    got = torch.autograd.grad(out, leaves)
    ref_leaves = [t.double().requires_grad_() for t in (q, e, att)]
    ref = mixture_bce(*ref_leaves, y.double(), impl="eager", **kw)
    want = torch.autograd.grad(ref, ref_leaves)
    assert torch.isfinite(out) and all(torch.isfinite(t).all() for t in got)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
def test_triton_precision_policy():
    """float64 is refused by ``triton`` (it would compute in float32) and never picked by
    ``auto``; ``precision="bf16"`` rounds the GEMM inputs (close to float32, not equal)."""
    q, e, att, bias, y = make_t(B=33, K=2, Fd=40, N=70, dtype=torch.float32, seed=8)
    with pytest.raises(ValueError, match="impl='triton' computes in float32"):
        mixture_bce(q.double(), e.double(), att.double(), y.double(), impl="triton")
    from disenkg.ops.mixture_bce.api import resolve_impl

    assert resolve_impl("auto", torch.device("cuda"), torch.float64)[0] == "chunked"
    exact = mixture_bce(q, e, att, y, bias=bias, impl="triton")
    low = mixture_bce(q, e, att, y, bias=bias, impl="triton", precision="bf16")
    ref = mixture_bce(q, e, att, y, bias=bias, impl="eager")
    torch.testing.assert_close(exact, ref, rtol=1e-6, atol=1e-7)
    assert 0 < abs(float(low - ref)) <= 1e-2 * float(ref)
    g_low, g_ref = grads(low, q, e, att, bias), grads(ref, q, e, att, bias)
    for a, b in zip(g_low, g_ref):
        assert (a - b).norm() <= 2e-2 * b.norm()


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
@pytest.mark.parametrize("order,sparse,use_bias,reduction", [
    (o, s, b, r) for o, s, b, r in itertools.product(
        ["after", "before"], [False, True], [True, False], ["mean", "none"])
])
def test_triton_interpreter(order, sparse, use_bias, reduction):
    q, e, att, bias, y = make_t(B=5, K=3, Fd=7, N=37, dtype=torch.float32)
    b = bias if use_bias else None
    tgt = tuple(y.nonzero().T) if sparse else y
    kw = dict(bias=b, label_smoothing=0.1, order=order, reduction=reduction)
    ref = mixture_bce(*(x.double() for x in (q, e, att)), y.double(),
                      **{**kw, "bias": None if b is None else b.double()}, impl="eager")
    out = mixture_bce(q, e, att, tgt, **kw, impl="triton")
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    w = (torch.randn(out.shape, dtype=torch.float32, device=out.device)
         if reduction == "none" else 1.0)
    g_out = grads((out * w).sum(), q, e, att, b)
    qd, ed, ad = (x.detach().double().requires_grad_() for x in (q, e, att))
    bd = None if b is None else b.detach().double().requires_grad_()
    ref = mixture_bce(qd, ed, ad, y.double(), **{**kw, "bias": bd}, impl="eager")
    g_ref = grads((ref * (w.double() if isinstance(w, torch.Tensor) else w)).sum(), qd, ed, ad, bd)
    for gr, go in zip(g_ref, g_out):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-5)
