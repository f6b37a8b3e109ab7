"""The precision policy: ``use_bf16`` resolution, the ``bf16_matmul`` context, and the
mixture BCE with bfloat16-input GEMMs against float64."""

from __future__ import annotations

import pytest
import torch

from disenkg.ops import mixture_bce, precision
from disenkg.training import TrainConfig

needs_bf16_matmul = pytest.mark.skipif(not precision.bf16_matmul_supported(),
                                       reason="torch without mkldnn.matmul.fp32_precision")


def test_use_bf16_resolution(monkeypatch):
    x32, x64 = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    assert not precision.use_bf16("fp32", x32)
    assert not precision.use_bf16("auto", x64)
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: False)
    assert not precision.use_bf16("auto", x32)
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: True)
    assert precision.use_bf16("auto", x32) == precision.bf16_matmul_supported()
    with pytest.raises(ValueError, match="needs float32 CPU inputs"):
        precision.use_bf16("bf16", x64)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        precision.use_bf16("half", x32)


@needs_bf16_matmul
def test_bf16_matmul_context_restores_the_setting():
    ctl = torch.backends.mkldnn.matmul
    before = ctl.fp32_precision
    with precision.bf16_matmul():
        assert ctl.fp32_precision == "bf16"
    assert ctl.fp32_precision == before
    with pytest.raises(RuntimeError, match="boom"), precision.bf16_matmul():
        raise RuntimeError("boom")
    assert ctl.fp32_precision == before
    with precision.bf16_matmul(False):
        assert ctl.fp32_precision == before


@needs_bf16_matmul
def test_bf16_matmul_rounds_inputs_not_outputs():
    """A large product in the context equals the float32-accumulated product of the
    bfloat16-rounded inputs (or the exact one, if oneDNN keeps float32), never a
    bfloat16-rounded output."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 300, generator=g)
    b = torch.randn(300, 400, generator=g)
    with precision.bf16_matmul():
        out = a @ b
    assert out.dtype == torch.float32
    exact = a.double() @ b.double()
    rounded = a.bfloat16().double() @ b.bfloat16().double()
    err_rounded = (out.double() - rounded).abs().max()
    err_exact = (out.double() - exact).abs().max()
    assert min(err_rounded, err_exact) < 1e-3  # float32 accumulation only
    # a bfloat16 output would be off by ~2^-9 * |out| ~ 0.03 for these magnitudes
    assert (out.double() - out.bfloat16().double()).abs().max() > 1e-3


def _problem(B=300, K=3, Fd=64, N=700, seed=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, K, Fd, generator=g) * 0.5
    e = torch.randn(N, K, Fd, generator=g) * 0.5
    att = torch.randn(B, K, generator=g)
    bias = torch.randn(N, generator=g)
    rows = torch.arange(B).repeat_interleave(2)
    cols = torch.randint(0, N, (2 * B,), generator=g)
    return q, e, att, bias, (rows, cols)


@needs_bf16_matmul
def test_mixture_bce_bf16_close_to_float64():
    q, e, att, bias, tgt = _problem()
    args64 = [t.double().requires_grad_() for t in (q, e, att, bias)]
    ref = mixture_bce(*args64[:3], tgt, bias=args64[3], label_smoothing=0.1, impl="chunked")
    g_ref = torch.autograd.grad(ref, args64)
    args = [t.clone().requires_grad_() for t in (q, e, att, bias)]
    out = mixture_bce(*args[:3], tgt, bias=args[3], label_smoothing=0.1, impl="chunked",
                      precision="bf16")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-3, atol=0)
    for go, gr in zip(torch.autograd.grad(out, args), g_ref):
        assert go.dtype == torch.float32
        assert (go.double() - gr).norm() <= 1e-2 * gr.norm()


def test_mixture_bce_precision_validation():
    q, e, att, bias, tgt = _problem(B=4, N=9, Fd=3)
    with pytest.raises(ValueError,
                       match="by the chunked schedule and the Triton .* not by 'eager'"):
        mixture_bce(q, e, att, tgt, impl="eager", precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        mixture_bce(q, e, att, tgt, precision="tf32")
    # auto on float64 inputs stays exact
    args = [t.double() for t in (q, e, att)]
    torch.testing.assert_close(mixture_bce(*args, tgt, precision="auto", impl="chunked"),
                               mixture_bce(*args, tgt, impl="eager"))


def test_train_config_checks_loss_precision():
    with pytest.raises(ValueError, match="loss_precision: 'fp16' is not one of"):
        TrainConfig(loss_precision="fp16")
