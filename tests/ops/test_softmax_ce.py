"""softmax_cross_entropy: the 1-N softmax cross-entropy against the smoothed
uniform-over-positives target, against the plain definition."""

from __future__ import annotations

import pytest
import torch

from disenkg.ops import SoftmaxCrossEntropyLoss, softmax_cross_entropy


def naive(logits, dense, eps):
    """-sum_n t_bn log softmax(z_b)_n with t = (1 - eps) y / |y| + eps / N, per row."""
    N = logits.shape[1]
    t = (1 - eps) * dense / dense.sum(1, keepdim=True) + eps / N
    return -(t * torch.log_softmax(logits, 1)).sum(1)


def problem(B, N, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, N, generator=g, dtype=dtype)).requires_grad_()
    dense = (torch.rand(B, N, generator=g) < 0.2).to(dtype)
    dense[torch.arange(B), torch.randint(N, (B,), generator=g)] = 1  # >= 1 positive a row
    return logits, dense


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.37])
@pytest.mark.parametrize("B,N", [(1, 1), (5, 13), (7, 301)])
@pytest.mark.parametrize("form", ["dense", "pairs"])
def test_values_and_gradients_against_naive_float64(eps, B, N, form):
    logits, dense = problem(B, N, seed=B * N)
    target = dense if form == "dense" else tuple(dense.nonzero(as_tuple=True))
    out = softmax_cross_entropy(logits, target, label_smoothing=eps, reduction="none")
    ref = naive(logits, dense, eps)
    torch.testing.assert_close(out, ref)
    w = torch.randn(B, dtype=torch.float64)
    g_out, = torch.autograd.grad((out * w).sum(), logits)
    g_ref, = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g_out, g_ref)
    # the closed form: softmax - t, per unit weight
    t = (1 - eps) * dense / dense.sum(1, keepdim=True) + eps / N
    torch.testing.assert_close(g_out, w[:, None] * (torch.softmax(logits, 1) - t).detach())


def test_reductions_module_and_duplicate_pairs():
    logits, dense = problem(4, 9, seed=3)
    rows, cols = dense.nonzero(as_tuple=True)
    per_row = naive(logits, dense, 0.1).detach()
    doubled = (torch.cat([rows, rows]), torch.cat([cols, cols]))  # a repeated pair counts once
    mod = SoftmaxCrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(mod(logits, doubled).detach(), per_row.mean())
    total = softmax_cross_entropy(logits, (rows, cols), label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(total.detach(), per_row.sum())
    assert "label_smoothing=0.1" in repr(mod)


def test_float32_large_logits_stay_finite():
    """Logits of +-1e4 (exp overflows) give the log-space answer."""
    logits = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    out = softmax_cross_entropy(logits, (torch.tensor([0]), torch.tensor([1])))
    assert out.item() == pytest.approx(2e4)
    out.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[1.0, -1.0, 0.0]]))


def test_bad_inputs_raise_naming_the_problem():
    logits = torch.zeros(3, 4)
    rows, cols = torch.tensor([0, 2]), torch.tensor([1, 3])
    with pytest.raises(ValueError, match=r"1 of 3 queries have no positive \(the first is "
                                         r"row 1\)"):
        softmax_cross_entropy(logits, (rows, cols))
    with pytest.raises(ValueError, match="cols must lie in \\[0, 4\\), got range \\[1, 9\\]"):
        softmax_cross_entropy(logits, (rows, torch.tensor([1, 9])))
    with pytest.raises(ValueError, match=r"shape \(B, N\)"):
        softmax_cross_entropy(torch.zeros(3), (rows, cols))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        softmax_cross_entropy(logits, (rows, cols), label_smoothing=1.0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        softmax_cross_entropy(logits, torch.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="non-finite"):
        softmax_cross_entropy(torch.full((3, 4), float("nan")), (rows, cols))
    with pytest.raises(ValueError, match="unknown reduction"):
        SoftmaxCrossEntropyLoss(reduction="avg")
