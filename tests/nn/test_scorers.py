"""Every registered scorer against a naive per-component formula (one generic test)."""

from __future__ import annotations

import pytest
import torch

from disenkg.nn.scorers import (
    SCORERS,
    ConvEScorer,
    InteractEScorer,
    TransEL1Scorer,
    TransEL2Scorer,
    checkered_permutation,
)

B, K, Fd, N = 4, 3, 12, 9


def build(name):
    if name == "interacte":
        return InteractEScorer(embedding_dim=Fd, k_h=4, k_w=3, num_filters=3, kernel_size=3,
                               num_perm=2)
    if name == "conve":
        return ConvEScorer(embedding_dim=Fd, k_h=4, k_w=3, num_filters=3, kernel_size=3)
    return SCORERS.get(name)()


def naive(name, scorer, sub, rel, ent):
    """Per component and per candidate, straight from the definition."""
    out = torch.zeros(B, K, N, dtype=sub.dtype)
    for k in range(K):
        if name in ("interacte", "conve"):
            q = scorer.interaction(sub[:, k], rel[:, k])  # the component alone
        for n in range(N):
            if name == "distmult":
                out[:, k, n] = (sub[:, k] * rel[:, k] * ent[n, k]).sum(-1)
            elif name == "transe":
                out[:, k, n] = scorer.gamma - ((sub[:, k] + rel[:, k] - ent[n, k]) ** 2).sum(-1)
            elif name == "transe_l1":
                out[:, k, n] = scorer.gamma - (sub[:, k] + rel[:, k] - ent[n, k]).abs().sum(-1)
            else:
                out[:, k, n] = (q * ent[n, k]).sum(-1)
    return out


TESTED_SCORERS = {"interacte", "conve", "distmult", "transe", "transe_l1"}


@pytest.mark.parametrize("name", sorted(TESTED_SCORERS))
def test_scorer_against_naive(name):
    torch.manual_seed(0)
    scorer = build(name).double().eval()  # eval: dropout off, BN running stats
    g = torch.Generator().manual_seed(1)
    sub = torch.randn(B, K, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(B, K, Fd, generator=g, dtype=torch.float64)
    ent = torch.randn(N, K, Fd, generator=g, dtype=torch.float64, requires_grad=True)
    x = scorer.logits(sub, rel, ent)
    ref = naive(name, scorer, sub, rel, ent)
    torch.testing.assert_close(x, ref)
    if scorer.dot_product:  # the fused path sees exactly these logits
        q, c = scorer.query(sub, rel), scorer.candidates(ent)
        torch.testing.assert_close(torch.einsum("bkf,nkf->bkn", q, c), ref)
    for a, b in zip(torch.autograd.grad(x.sum(), (sub, ent)),
                    torch.autograd.grad(ref.sum(), (sub, ent))):
        torch.testing.assert_close(a, b)


def test_checkered_permutation():
    perm = checkered_permutation(12, 4, 3, num_perm=2, seed=0)
    assert perm.shape == (2, 24)
    for p in range(2):
        assert sorted(perm[p].tolist()) == list(range(24))
        img = (perm[p] < 12).view(4, 6)  # entity cells
        for i in range(4):
            for j in range(6):
                assert bool(img[i, j]) == ((i + j + p) % 2 == 0)
    assert torch.equal(perm, checkered_permutation(12, 4, 3, num_perm=2, seed=0))
    assert not torch.equal(perm, checkered_permutation(12, 4, 3, num_perm=2, seed=1))


def test_interacte_buffer_and_errors():
    s = InteractEScorer(embedding_dim=12, k_h=4, k_w=3, num_filters=2, kernel_size=3)
    assert "perm" in dict(s.named_buffers(recurse=True)) or any(
        n.endswith("perm") for n, _ in s.named_buffers())
    with pytest.raises(ValueError, match="odd kernel_size"):
        InteractEScorer(embedding_dim=12, k_h=4, k_w=3, kernel_size=4)
    with pytest.raises(ValueError, match=r"k_h \* k_w == dim"):
        InteractEScorer(embedding_dim=13, k_h=4, k_w=3)


def test_transe_gamma_learnable():
    s = TransEL2Scorer(gamma=5.0)
    assert s.gamma.requires_grad and float(s.gamma) == 5.0
    assert not TransEL1Scorer(learn_gamma=False).gamma.requires_grad
