"""mixture_bce's positive-class weight against the float64 textbook definition
-(w t log p + (1 - t) log(1 - p)): values and all gradients, dense and sparse targets,
every impl (triton under the interpreter), with and without label smoothing."""

from __future__ import annotations

import itertools

import pytest
import torch

from disenkg.ops import MixtureBCELoss, mixture_bce
from tests.ops.test_mixture_bce import HAS_TRITON, grads, make, make_t, naive


def naive_weighted(q, e, att, y, bias, eps, order, w):
    return naive(q, e, att, y, bias, eps, order, pos_weight=w)


CASES = list(itertools.product(["eager", "chunked"], ["after", "before"], [0.0, 0.1],
                               [False, True], ["mean", "sum", "none"]))


@pytest.mark.parametrize("impl,order,eps,sparse,reduction", CASES)
def test_pos_weight_matches_the_definition(impl, order, eps, sparse, reduction):
    q, e, att, bias, y = make(B=6, K=3, Fd=5, N=41, seed=3)
    w = 7.5
    tgt = tuple(y.nonzero().T) if sparse else y
    out = mixture_bce(q, e, att, tgt, bias=bias, label_smoothing=eps, order=order,
                      reduction=reduction, impl=impl, pos_weight=w)
    ref = naive_weighted(q, e, att, y, bias, eps, order, w)
    ref = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn(out.shape, dtype=out.dtype) if reduction == "none" else 1.0
    for go, gr in zip(grads((out * g).sum(), q, e, att, bias),
                      grads((ref * g).sum(), q, e, att, bias)):
        torch.testing.assert_close(go, gr, rtol=1e-9, atol=1e-11)


def test_pos_weight_one_is_the_plain_loss():
    q, e, att, bias, y = make(seed=1)
    a = mixture_bce(q, e, att, y, bias=bias, label_smoothing=0.1, impl="chunked")
    b = mixture_bce(q, e, att, y, bias=bias, label_smoothing=0.1, impl="chunked",
                    pos_weight=1.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("K", [1, 3])
def test_native_tile_path_in_float32(K):
    """float32 CPU + sparse target takes the native tile for the background."""
    q, e, att, bias, y = make(B=9, K=K, Fd=8, N=300, dtype=torch.float32, seed=5,
                              density=0.05)
    tgt = tuple(y.nonzero().T)
    out = mixture_bce(q, e, att, tgt, bias=bias, label_smoothing=0.1, impl="chunked",
                      pos_weight=3.0)
    qd, ed, ad, bd = (x.detach().double().requires_grad_() for x in (q, e, att, bias))
    ref = naive_weighted(qd, ed, ad, y.double(), bd, 0.1, "after", 3.0).mean()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    for go, gr in zip(grads(out, q, e, att, bias), grads(ref, qd, ed, ad, bd)):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-7)


def test_gradcheck_with_pos_weight():
    q, e, att, bias, y = make(B=3, K=2, Fd=3, N=7, seed=2)
    tgt = tuple(y.nonzero().T)

    def f(q, e, att, bias):
        return mixture_bce(q, e, att, tgt, bias=bias, label_smoothing=0.1, impl="chunked",
                           pos_weight=4.0)

    assert torch.autograd.gradcheck(f, (q, e, att, bias))


@pytest.mark.parametrize("bad,err,msg", [
    (0.0, ValueError, "pos_weight must be a finite number > 0, got 0.0"),
    (-2, ValueError, "pos_weight must be a finite number > 0, got -2"),
    (float("inf"), ValueError, "got inf"),
    (float("nan"), ValueError, "got nan"),
    ("3", TypeError, "pos_weight must be a number, got str"),
    (torch.ones(2), ValueError, r"pos_weight must be a scalar, got shape \(2,\)"),
])
def test_bad_pos_weight_is_named(bad, err, msg):
    q, e, att, bias, y = make()
    with pytest.raises(err, match=msg):
        mixture_bce(q, e, att, y, pos_weight=bad)
    with pytest.raises(err, match=msg):
        MixtureBCELoss(pos_weight=bad)


def test_module_passes_pos_weight():
    q, e, att, bias, y = make(seed=4)
    mod = MixtureBCELoss(pos_weight=2.0, impl="chunked")
    ref = naive_weighted(q, e, att, y, None, 0.0, "after", 2.0).mean()
    torch.testing.assert_close(mod(q, e, att, y), ref)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
@pytest.mark.parametrize("order,sparse,reduction,eps", list(itertools.product(
    ["after", "before"], [False, True], ["mean", "none"], [0.0, 0.1])))
def test_triton_pos_weight(order, sparse, reduction, eps):
    q, e, att, bias, y = make_t(B=5, K=3, Fd=7, N=37, dtype=torch.float32, seed=6)
    tgt = tuple(y.nonzero().T) if sparse else y
    kw = dict(bias=bias, label_smoothing=eps, order=order, reduction=reduction, pos_weight=5.0)
    out = mixture_bce(q, e, att, tgt, **kw, impl="triton")
    qd, ed, ad, bd = (x.detach().double().requires_grad_() for x in (q, e, att, bias))
    ref = naive_weighted(qd, ed, ad, y.double(), bd, eps, order, 5.0)
    ref = ref.mean() if reduction == "mean" else ref
    # float32: the positives' correction cancels against the background, scaled by w = 5
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=5e-6)
    g = torch.randn(out.shape, device=out.device) if reduction == "none" else 1.0
    gd = g.double() if isinstance(g, torch.Tensor) else g
    for go, gr in zip(grads((out * g).sum(), q, e, att, bias),
                      grads((ref * gd).sum(), qd, ed, ad, bd)):
        torch.testing.assert_close(go.double(), gr, rtol=1e-4, atol=1e-5)
