"""Counter-based dropout: the native kernel and the PyTorch mask against a plain Python
SplitMix64, its rate, gradients, seeds and errors."""

from __future__ import annotations

import pytest
import torch

from disenkg.nn.dropout import Dropout
from disenkg.ops import native
from disenkg.ops.dropout import _apply, dropout, keep_mask, threshold

needs_native = pytest.mark.skipif(not native.available(),
                                  reason=f"native kernels: {native.unavailable_reason()}")
M64 = (1 << 64) - 1


def python_keep(n, seed, p):
    """SplitMix64's output function on seed + (i + 1) * golden, in Python integers."""
    out = []
    for i in range(n):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out.append((z >> 32) >= round(p * 2**32))
    return torch.tensor(out)


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 12345, M64])
@pytest.mark.parametrize("p", [0.1, 0.4, 0.9])
def test_torch_mask_equals_python_splitmix(seed, p):
    assert torch.equal(keep_mask(257, seed, p), python_keep(257, seed, p))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1,), (7, 3, 5), (14, 3, 33), (1000, 3)])
def test_native_equals_eager_values_and_grads(dtype, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)
    up = torch.randn(*shape, generator=g, dtype=dtype)
    outs = []
    for impl in ("native", "eager"):
        torch.manual_seed(3)
        y = dropout(x, 0.4, impl=impl)
        (gx,) = torch.autograd.grad((y * up).sum(), x)
        outs.append((y, gx))
    (y, gx), (y_ref, gx_ref) = outs
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
    assert y.dtype == dtype
    kept = y != 0  # the values are x / (1 - p) where kept
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.6)
    torch.testing.assert_close(gx, up * kept / 0.6)  # the backward mask is the forward's


@needs_native
def test_non_contiguous_input_and_thread_counts():
    x = torch.randn(40, 30).t()  # a transposed view: its elements in row-major order
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _apply(x, 99, 0.3, True)
        torch.set_num_threads(2)
        two = _apply(x, 99, 0.3, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(one, _apply(x, 99, 0.3, False))


@pytest.mark.parametrize("impl", ["auto", "eager"])
def test_rate_seeds_and_shortcuts(impl):
    x = torch.ones(1_000_000)
    torch.manual_seed(0)
    a = dropout(x, 0.3, impl=impl)
    dropped = float((a == 0).double().mean())
    assert abs(dropped - 0.3) < 5 * (0.3 * 0.7 / x.numel()) ** 0.5
    assert torch.equal(a[a != 0], torch.full_like(a[a != 0], 1 / 0.7))
    b = dropout(x, 0.3, impl=impl)  # the next draw: another mask
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(a, dropout(x, 0.3, impl=impl))  # the seed repeats it
    assert dropout(x, 0.0, impl=impl) is x and dropout(x, 0.3, False, impl=impl) is x
    assert torch.equal(dropout(x, 1.0, impl=impl), torch.zeros_like(x))
    assert threshold(1.0) == 2**32 - 1 and threshold(0.5) == 2**31


def test_nothing_of_the_input_is_saved():
    x = torch.randn(300, 20, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t,
                                                  lambda t: t):
        y = dropout(x * 2, 0.5)
    assert saved == [] and y.requires_grad


def test_errors_and_module():
    x = torch.randn(5)
    with pytest.raises(ValueError, match=r"dropout probability must lie in \[0, 1\], got 1.5"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match="impl='native' needs CPU float32/float64 tensors, "
                                         "got torch.float16 on cpu"):
        dropout(x.half(), 0.5, impl="native")
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        Dropout(0.5, impl="fast")
    m = Dropout(0.25)
    assert isinstance(m, torch.nn.Dropout) and m.p == 0.25 and m.state_dict() == {}
    m.eval()
    assert m(x) is x
    m.train()
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    assert torch.equal(y, dropout(x, 0.25, impl="eager"))
