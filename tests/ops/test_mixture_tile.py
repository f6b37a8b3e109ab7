"""The native element-wise tile of the chunked mixture BCE against the PyTorch tile
(float64) and the textbook formula."""

from __future__ import annotations

import pytest
import torch

from disenkg.ops import mixture_bce, native
from disenkg.ops.mixture_bce import chunked
from disenkg.ops.mixture_bce.inputs import make_target

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"native kernels: {native.unavailable_reason()}")


def _tile_inputs(K, R, C, seed=0, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(K, R, C, generator=g) * scale).float()
    loga = torch.log_softmax(torch.randn(K, R, generator=g) * 3, 0).unsqueeze(-1).float()
    return x, loga


@pytest.mark.parametrize("K,R,C", [(3, 5, 7), (1, 4, 130), (4, 3, 65), (16, 2, 200),
                                   (2, 1, 64), (5, 7, 1)])
@pytest.mark.parametrize("want_grad", [True, False])
def test_native_tile_matches_float64_tile(K, R, C, want_grad):
    x, loga = _tile_inputs(K, R, C)
    x[0, 0, :min(C, 5)] = torch.tensor([100.0, -100.0, 0.0, 30.0, -0.5])[:min(C, 5)]
    la = loga if K > 1 else None
    t, w = 0.0123, (0.37 if want_grad else None)
    ref_loss, ref_gx, ref_gl = chunked.tile(x.double(), None if la is None else la.double(),
                                            t, w)
    loss, gx, gl = chunked.native_tile(x.clone(), la, t, w)
    torch.testing.assert_close(loss, ref_loss.sum(), rtol=1e-6, atol=1e-6)
    if not want_grad:
        assert gx is None and gl is None
        return
    torch.testing.assert_close(gx.double(), ref_gx, rtol=1e-5, atol=1e-7)
    if K == 1:
        assert gl is None
    else:
        torch.testing.assert_close(gl.double(), ref_gl, rtol=1e-5, atol=1e-7)


def test_native_tile_handles_tiny_attention_and_extreme_logits():
    K, R, C = 3, 2, 70
    x = torch.linspace(-120, 120, K * R * C).view(K, R, C)
    loga = torch.tensor([[-80.0, 0.0], [0.0, -80.0], [-1e-3, -200.0]]).log_softmax(0)
    loga = loga.unsqueeze(-1)
    ref = chunked.tile(x.double(), loga.double(), 0.5, 1.0)
    out = chunked.native_tile(x.clone(), loga, 0.5, 1.0)
    assert torch.isfinite(out[0]) and torch.isfinite(out[1]).all()
    torch.testing.assert_close(out[0], ref[0].sum(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(out[1].double(), ref[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[2].double(), ref[2], rtol=1e-5, atol=1e-6)


def test_native_tile_propagates_nan():
    x, loga = _tile_inputs(3, 2, 9)
    x[1, 1, 4] = float("nan")
    loss, gx, gl = chunked.native_tile(x, loga, 0.1, 1.0)
    assert torch.isnan(loss)
    assert torch.isnan(gx[:, 1, 4]).all() and torch.isnan(gl[:, 1]).all()
    assert torch.isfinite(gx[:, 0]).all()  # the other row is untouched


def test_native_tile_rejects_what_it_cannot_run():
    x, loga = _tile_inputs(3, 2, 9)
    with pytest.raises(ValueError, match="contiguous float32 CPU tile"):
        chunked.native_tile(x.double(), loga, 0.1, 1.0)
    with pytest.raises(ValueError, match="log attention must be"):
        chunked.native_tile(x, loga[:, :1], 0.1, 1.0)
    big, la = _tile_inputs(chunked.NATIVE_MAX_K + 1, 2, 3)
    with pytest.raises(ValueError, match="up to 16 components"):
        chunked.native_tile(big, la, 0.1, 1.0)


def _sparse_problem(B=37, K=3, Fd=11, N=301, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, K, Fd, generator=g) * 0.7
    e = torch.randn(N, K, Fd, generator=g) * 0.7
    att = torch.randn(B, K, generator=g)
    rows = torch.arange(B).repeat_interleave(2)
    cols = torch.randint(0, N, (2 * B,), generator=g)
    return q, e, att, (rows, cols)


@pytest.mark.parametrize("impl", ["native", "eager"])
def test_chunked_forward_tile_impls_agree(impl):
    q, e, att, (rows, cols) = _sparse_problem()
    B, K, _ = q.shape
    N = e.shape[0]
    target = make_target((rows, cols), B, N, 0.1, q.dtype, q.device)
    qk, ek = q.transpose(0, 1).contiguous(), e.transpose(0, 1)
    la = att.log_softmax(-1).t().unsqueeze(-1).contiguous()
    ref, ref_g = chunked.chunked_forward(qk.double(), ek.double(), la.double(), None, target,
                                         "mean", True, budget=4096, impl="eager")
    out, g = chunked.chunked_forward(qk, ek, la, None, target, "mean", True, budget=4096,
                                     impl=impl)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    for a, b in ((g.q, ref_g.q), (g.e, ref_g.e), (g.loga, ref_g.loga)):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-8)


def test_tile_impl_validation():
    """The element tile's ``impl``, and the op's ``impl="native"`` that requires it."""
    q, e, att, (rows, cols) = _sparse_problem(B=3, N=20)
    target = make_target((rows, cols), 3, 20, 0.1, torch.float64, q.device)
    qk, ek = q.double().transpose(0, 1).contiguous(), e.double().transpose(0, 1)
    la = att.double().log_softmax(-1).t().unsqueeze(-1).contiguous()
    with pytest.raises(ValueError, match="impl='native' needs float32"):
        chunked.chunked_forward(qk, ek, la, None, target, "mean", True, impl="native")
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        chunked.chunked_forward(qk, ek, la, None, target, "mean", True, impl="fast")
    with pytest.raises(ValueError, match="impl='native' needs float32"):
        mixture_bce(q.double(), e.double(), att.double(), (rows, cols), impl="native")
    with pytest.raises(ValueError, match="unknown impl 'torch'; choose one of"):
        mixture_bce(q, e, att, (rows, cols), impl="torch")


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
@pytest.mark.parametrize("order", ["after", "before"])
def test_op_impls_native_and_chunked_equal_eager(order):
    """``impl="native"`` (the C tile) and ``"chunked"`` (the PyTorch tile) through the op's
    API against the materialising ``"eager"`` (float32, sparse target, values and
    gradients)."""
    q, e, att, tgt = _sparse_problem(B=9, N=131)
    leaves = [t.clone().requires_grad_() for t in (q, e, att)]
    ref = mixture_bce(*leaves, tgt, label_smoothing=0.1, order=order, impl="eager")
    ref_g = torch.autograd.grad(ref, leaves)
    for impl in ("native", "chunked"):
        leaves = [t.clone().requires_grad_() for t in (q, e, att)]
        out = mixture_bce(*leaves, tgt, label_smoothing=0.1, order=order, impl=impl)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-7)
        for a, b in zip(torch.autograd.grad(out, leaves), ref_g):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("order", ["after", "before"])
def test_float32_sparse_training_loss_matches_textbook(order):
    """The default CPU path of DisenKGAT training (float32, sparse 1-N targets, label
    smoothing) against the formula written out in float64."""
    q, e, att, (rows, cols) = _sparse_problem(B=23, N=157)
    B, N = q.shape[0], e.shape[0]
    y = torch.zeros(B, N, dtype=torch.float64)
    y[rows, cols] = 1
    t = 0.9 * y + 1.0 / N
    qd, ed, ad = (x.double().requires_grad_() for x in (q, e, att))
    a = ad.softmax(-1)
    xs = torch.einsum("bkf,nkf->bkn", qd, ed)
    if order == "after":
        p = (a.unsqueeze(-1) * torch.sigmoid(xs)).sum(1)
        ref = -(t * p.log() + (1 - t) * (-p).log1p()).mean()
    else:
        z = (a.unsqueeze(-1) * xs).sum(1)
        ref = torch.nn.functional.binary_cross_entropy_with_logits(z, t)
    ref_g = torch.autograd.grad(ref, (qd, ed, ad))
    q32, e32, a32 = (x.clone().requires_grad_() for x in (q, e, att))
    out = mixture_bce(q32, e32, a32, (rows, cols), label_smoothing=0.1, order=order,
                      impl="chunked", chunk_budget_bytes=2048)
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-7)
    for go, gr in zip(torch.autograd.grad(out, (q32, e32, a32)), ref_g):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-8)
