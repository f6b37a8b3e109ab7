"""Channels-last patch primitives: native kernels and the PyTorch path against loops."""

from __future__ import annotations

import pytest
import torch

from disenkg.ops import native
from disenkg.ops.patches import fold_patches, patches, relu_mask_, relu_mask_backward_

IMPLS = ["eager", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason=f"native kernels: {native.unavailable_reason()}"))]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def loop_patches(x, k):
    n, H, W = x.shape
    rows = []
    for m in range(n):
        for i in range(H - k + 1):
            for j in range(W - k + 1):
                rows.append(torch.cat([x[m, i:i + k, j:j + k].reshape(-1), x.new_ones(1)]))
    return torch.stack(rows)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((3, 5, 4), 2), ((1, 3, 3), 3), ((2, 4, 6), 1)])
def test_patches_against_loop(impl, dtype, shape, k):
    x = torch.randn(2, *shape, dtype=torch.float64)[1].to(dtype)
    ref = loop_patches(x, k)
    torch.testing.assert_close(patches(x, k, impl=impl), ref, rtol=0, atol=0)
    torch.testing.assert_close(patches(x, k, bias_column=False, impl=impl), ref[:, :-1],
                               rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_patches_of_a_strided_channel_into_a_buffer(impl):
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64)
    buf = torch.full((100, 10), float("nan"), dtype=torch.float64)
    out = patches(x[:, 1], 3, out=buf, impl=impl)
    assert out.data_ptr() == buf.data_ptr() and out.shape == (3 * 4 * 3, 10)
    torch.testing.assert_close(out, loop_patches(x[:, 1], 3), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cannot hold \(36, 10\)"):
        patches(x[:, 1], 3, out=buf[:20], impl=impl)
    with pytest.raises(ValueError, match="kernel size 7 does not fit 6 x 5"):
        patches(x[:, 1], 7, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fold_is_the_adjoint_of_patches(impl, dtype):
    """<patches(x), g> == <x, fold(g)> for the first k*k columns (float64 accumulation for
    the check; bfloat16 inputs fold into float32)."""
    g = torch.Generator().manual_seed(0)
    n, H, W, k = 3, 7, 5, 3
    x = torch.randn(n, H, W, generator=g, dtype=torch.float64)
    cols = torch.randn(n * 5 * 3, k * k + 1, generator=g, dtype=torch.float64).to(dtype)
    out = fold_patches(cols, (n, H, W), k, impl=impl)
    assert out.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    lhs = (loop_patches(x, k)[:, :-1] * cols[:, :-1].double()).sum()
    rhs = (x * out.double()).sum()
    torch.testing.assert_close(rhs, lhs, rtol=1e-5 if dtype != torch.float64 else 1e-12,
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(45, >= 9\)"):
        fold_patches(cols[:10], (n, H, W), k, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_mask", [True, False])
def test_relu_mask_and_backward(impl, dtype, with_mask):
    g = torch.Generator().manual_seed(0)
    n, L, C = 3, 5, 7
    z = torch.randn(n, L, C, generator=g).to(dtype)
    z[0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")], dtype=dtype)
    keep = (torch.rand(n, C, generator=g) > 0.4) if with_mask else None
    k = keep if with_mask else torch.ones(n, C, dtype=torch.bool)
    ref = torch.where(k[:, None, :], torch.relu(z), torch.zeros((), dtype=dtype))
    a = relu_mask_(z.clone(), keep, impl=impl)
    torch.testing.assert_close(a, ref, equal_nan=True, rtol=0, atol=0)
    da = torch.randn(n, L, C, generator=g).to(dtype)
    a0 = torch.nan_to_num(a, nan=0.0)  # the gradient gate of a NaN is left unspecified
    ref_d = torch.where(a0 > 0, da, torch.zeros((), dtype=dtype))
    torch.testing.assert_close(relu_mask_backward_(a0, da.clone(), impl=impl), ref_d,
                               rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_epilogue_shape_errors(impl):
    z = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"keep mask must be contiguous \(2, 4\) torch.bool"):
        relu_mask_(z, torch.ones(2, 3, dtype=torch.bool), impl=impl)
    with pytest.raises(ValueError, match=r"keep mask must be contiguous"):
        relu_mask_(z, torch.ones(2, 4), impl=impl)
    with pytest.raises(ValueError, match="contiguous \\(n, L, C\\) feature maps"):
        relu_mask_(z.transpose(1, 2), None, impl=impl)
    with pytest.raises(ValueError, match="does not match feature maps"):
        relu_mask_backward_(z, torch.randn(2, 3, 5), impl=impl)


def test_native_impl_rejects_unsupported_dtypes():
    with pytest.raises(ValueError, match="impl='native' needs CPU float32/float64/bfloat16"):
        patches(torch.randn(2, 4, 4).half(), 2, impl="native")
    with pytest.raises(ValueError, match="unknown impl 'gpu'"):
        patches(torch.randn(2, 4, 4), 2, impl="gpu")


@pytest.mark.parametrize("impl", IMPLS)
def test_accumulate_bf16_into_fp32(impl):
    from disenkg.ops.patches import accumulate_

    g = torch.Generator().manual_seed(0)
    acc = torch.randn(37, 11, generator=g)
    x = torch.randn(37, 11, generator=g).bfloat16()
    ref = acc + x.float()
    torch.testing.assert_close(accumulate_(acc, x, impl=impl), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cannot accumulate \(3,\) into \(37, 11\)"):
        accumulate_(acc, torch.ones(3), impl=impl)


def test_native_use_resolves_impl_choices():
    """The impl resolver shared by every op with a native kernel."""
    assert native.use("eager", True, "anything") is False
    assert native.use("auto", False, "anything") is False
    assert native.use("auto", True, "anything") is native.available()
    with pytest.raises(ValueError, match="unknown impl 'gpu'; choose one of"):
        native.use("gpu", True, "anything")
    with pytest.raises(ValueError, match="unknown impl 'torch'; choose one of"):
        native.use("torch", True, "anything")
    with pytest.raises(ValueError, match="impl='native' needs float16 support"):
        native.use("native", False, "float16 support")
