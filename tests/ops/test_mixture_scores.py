"""mixture_scores: the log mixture probability (after) / mixed logit (before) per entity."""

from __future__ import annotations

import pytest
import torch

from disenkg.ops.mixture_scores import mixture_scores


def naive(q, e, att, bias, order):
    B, K, _ = q.shape
    a = torch.softmax(att, -1)
    xs = [q[:, k] @ e[:, k].T + (0 if bias is None else bias) for k in range(K)]
    if order == "before":
        return sum(a[:, k:k + 1] * xs[k] for k in range(K))
    return torch.log(sum(a[:, k:k + 1] * torch.sigmoid(xs[k]) for k in range(K)))


@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("K", [1, 3])
def test_against_naive_float64(order, with_bias, K):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, K, 7, generator=g, dtype=torch.float64)
    e = torch.randn(11, K, 7, generator=g, dtype=torch.float64)
    att = torch.randn(5, K, generator=g, dtype=torch.float64)
    bias = torch.randn(11, generator=g, dtype=torch.float64) if with_bias else None
    out = mixture_scores(q, e, att, bias, order)
    ref = naive(q, e, att, bias, order)
    if K == 1 and order == "after":  # one component: the raw logit (same ranking)
        ref = q[:, 0] @ e[:, 0].T + (0 if bias is None else bias)
    torch.testing.assert_close(out, ref)


def test_extreme_logits_stay_finite_and_ordered():
    """Logits around -200 (p underflows in float32) still give finite, ordered scores."""
    q = torch.full((1, 3, 1), -1.0)
    e = torch.tensor([[[200.0]] * 3, [[210.0]] * 3])
    s = mixture_scores(q, e, torch.zeros(1, 3), None)
    assert torch.isfinite(s).all() and s[0, 0] > s[0, 1]
    torch.testing.assert_close(s, torch.tensor([[-200.0, -210.0]]))
