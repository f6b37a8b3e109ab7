"""ROC AUC and average precision on hand-computed cases and against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from disenkg.evaluation.binary import average_precision, roc_auc


def test_hand_computed():
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    y = torch.tensor([1, 0, 1, 0])
    assert roc_auc(s, y) == pytest.approx(0.75)  # pairs: (0.9>0.8, 0.9>0.6, 0.7<0.8, 0.7>0.6)
    assert average_precision(s, y) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    # ties count one half
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)


def test_auc_against_pairs():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 6, (40,), generator=g).float()
    y = torch.rand(40, generator=g) < 0.4
    pos, neg = s[y], s[~y]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    assert roc_auc(s, y) == pytest.approx(sum(pairs) / len(pairs))


def test_errors():
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="equal length"):
        average_precision(torch.tensor([0.1, 0.2]), torch.tensor([1]))
