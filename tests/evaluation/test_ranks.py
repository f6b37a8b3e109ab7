"""Filtered ranks and metrics against brute force, hand-computed cases and CompGCN's protocol."""

from __future__ import annotations

import pytest
import torch

from disenkg.datasets import QueryIndex
from disenkg.evaluation import LinkEvaluator, filtered_ranks, rank_metrics


def brute_force(scores, target, known):
    opt, pes = [], []
    for b in range(scores.shape[0]):
        st = scores[b, target[b]].item()
        o, p = 1, 0
        for n in range(scores.shape[1]):
            if known[b, n] and n != target[b]:
                continue
            s = scores[b, n].item()
            o += s > st
            p += s >= st
        opt.append(o)
        pes.append(p)
    return torch.tensor(opt, dtype=torch.float), torch.tensor(pes, dtype=torch.float)


@pytest.mark.parametrize("seed", range(3))
def test_against_brute_force_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    B, N = 7, 23
    scores = torch.randint(0, 5, (B, N), generator=g).float()  # many ties
    target = torch.randint(0, N, (B,), generator=g)
    known = torch.rand(B, N, generator=g) < 0.3
    known[0, target[0]] = True  # listing the target itself must not filter it
    opt, pes = brute_force(scores, target, known)
    dense = filtered_ranks(scores, target, known)
    sparse = filtered_ranks(scores, target, tuple(known.nonzero().T))
    for r in (dense, sparse):
        torch.testing.assert_close(r.optimistic, opt)
        torch.testing.assert_close(r.pessimistic, pes)
        torch.testing.assert_close(r.realistic, (opt + pes) / 2)
    raw = filtered_ranks(scores, target, None)
    opt0, _ = brute_force(scores, target, torch.zeros_like(known))
    torch.testing.assert_close(raw.optimistic, opt0)


def test_hand_computed():
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.9], [0.5, 0.5, 0.5, 0.1]])
    target = torch.tensor([0, 0])
    known = torch.tensor([[False, True, False, False], [False] * 4])
    r = filtered_ranks(scores, target, known)
    # row 0: entity 1 filtered; only entity 3 beats the target -> 2, 2
    # row 1: two ties with the target -> optimistic 1, pessimistic 3, realistic 2
    assert r.optimistic.tolist() == [2.0, 1.0]
    assert r.pessimistic.tolist() == [2.0, 3.0]
    assert r.realistic.tolist() == [2.0, 2.0]


def test_metrics_hand_computed():
    m = rank_metrics(torch.tensor([1.0, 2.0, 4.0, 10.0, 20.0]))
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.1 + 0.05) / 5)
    assert m["mr"] == pytest.approx(7.4)
    assert (m["hits@1"], m["hits@3"], m["hits@10"]) == (0.2, 0.4, 0.8)


def compgcn_protocol(scores, target, known):
    """The DisenKGAT/CompGCN ranking code, rewritten: filter with -1e6, double argsort."""
    pred = scores.clone()
    b_range = torch.arange(pred.size(0))
    target_pred = pred[b_range, target]
    pred = torch.where(known, -torch.ones_like(pred) * 10000000, pred)
    pred[b_range, target] = target_pred
    ranks = 1 + torch.argsort(torch.argsort(pred, dim=1, descending=True), dim=1,
                              descending=False)[b_range, target]
    return ranks.float()


def test_equals_compgcn_protocol_on_tie_free_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 500, generator=g)
    target = torch.randint(0, 500, (64,), generator=g)
    known = torch.rand(64, 500, generator=g) < 0.05
    ours = filtered_ranks(scores, target, known)
    ref = compgcn_protocol(scores, target, known)
    torch.testing.assert_close(ours.realistic, ref)
    torch.testing.assert_close(ours.optimistic, ref)


def test_errors():
    with pytest.raises(ValueError, match="NaN"):
        filtered_ranks(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) = \(1,\), got \(2,\)"):
        filtered_ranks(torch.zeros(1, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"known must be a \(B, N\) = \(1, 3\) bool mask"):
        filtered_ranks(torch.zeros(1, 3), torch.tensor([0]), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        rank_metrics(torch.tensor([0.0]))


class TableModel(torch.nn.Module):
    """Scores from a fixed (N, 2R, N) table; counts encode() calls."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.encodes = 0

    def encode(self):
        self.encodes += 1
        return self.table

    def score(self, reps, heads, rels):
        return reps[heads, rels]


def test_evaluator_both_directions_and_one_encode():
    N, R = 5, 1
    triples = torch.tensor([[0, 0, 1], [2, 0, 3]])
    fidx = QueryIndex(torch.cat([triples, torch.tensor([[0, 0, 4]])]), N, R)
    table = torch.zeros(N, 2 * R, N)
    # tail (0, r) -> answer 1; entity 4 is a filtered true answer scored higher
    table[0, 0] = torch.tensor([0.0, 0.5, 0.9, 0.1, 1.0])  # rank 2 (2 beats 1; 4 filtered)
    table[2, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # rank 1
    table[1, 1] = torch.tensor([0.2, 0.0, 0.0, 0.0, 0.0])  # head of (0,0,1): rank 1
    table[3, 1] = torch.tensor([0.0, 0.0, 0.3, 0.0, 0.7])  # head of (2,0,3): rank 2
    model = TableModel(table)
    ev = LinkEvaluator(filter_index=fidx, batch_size=1, progress=False)
    m = ev.evaluate(model, triples)
    assert model.encodes == 1
    assert m["tail"]["mrr"] == pytest.approx(0.75) and m["head"]["mrr"] == pytest.approx(0.75)
    assert m["mrr"] == pytest.approx(0.75) and m["hits@1"] == pytest.approx(0.5)
    assert m["rank_type"] == "realistic" and "optimistic" in m


class CountingModel(TableModel):
    """Random scores with ties; counts the queries scored."""

    def __init__(self, table):
        super().__init__(table)
        self.scored = 0

    def score(self, reps, heads, rels):
        self.scored += len(heads)
        return reps[heads, rels]


@pytest.mark.parametrize("distinct", [True, False])
def test_evaluator_scores_each_distinct_query_once_and_keeps_triple_order(distinct):
    """Repeated (h, r) queries: same ranks as a per-triple loop, in the input order."""
    g = torch.Generator().manual_seed(0)
    N, R = 7, 2
    triples = torch.stack([torch.randint(0, 3, (40,), generator=g),
                           torch.randint(0, R, (40,), generator=g),
                           torch.randint(0, N, (40,), generator=g)], 1)
    fidx = QueryIndex(triples, N, R)
    table = torch.randint(0, 4, (N, 2 * R, N), generator=g).float()  # many ties
    model = CountingModel(table)
    ranks = LinkEvaluator(filter_index=fidx, batch_size=3, progress=False,
                          distinct_queries=distinct).ranks(model, triples)
    for direction, (qh, qr, ans) in {"tail": triples[:, [0, 1, 2]].T,
                                     "head": triples[:, [2, 1, 0]].T}.items():
        if direction == "head":
            qr = qr + R
        for i in range(len(triples)):
            known = fidx.lookup(qh[i:i + 1], qr[i:i + 1])
            ref = filtered_ranks(table[qh[i], qr[i]][None], ans[i:i + 1], known)
            assert ranks[direction].optimistic[i] == ref.optimistic[0]
            assert ranks[direction].pessimistic[i] == ref.pessimistic[0]
    n_distinct = (len(torch.unique(triples[:, :2], dim=0))
                  + len(torch.unique(triples[:, [2, 1]], dim=0)))
    assert model.scored == (n_distinct if distinct else 2 * len(triples))
    assert n_distinct < 2 * len(triples)


def test_ranks_api_names_bad_arguments():
    import numpy as np

    s = torch.randn(3, 5)
    t = torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match="scores must be a torch.Tensor, got numpy.ndarray"):
        filtered_ranks(np.zeros((3, 5)), t)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        filtered_ranks(s, [0, 1, 2])
    with pytest.raises(TypeError, match="target must be an integer tensor, got torch.float32"):
        filtered_ranks(s, t.float())
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        filtered_ranks(s.long(), t)
    with pytest.raises(TypeError, match="known cols must be an integer tensor, got torch.float32"):
        filtered_ranks(s, t, (torch.tensor([0]), torch.tensor([1.0])))
    with pytest.raises(ValueError, match="known rows and cols must have the same length, got "
                                         "2 and 1"):
        filtered_ranks(s, t, (torch.tensor([0, 1]), torch.tensor([1])))
    with pytest.raises(ValueError, match=r"known rows must be 1-D, got shape \(1, 1\)"):
        filtered_ranks(s, t, (torch.tensor([[0]]), torch.tensor([1])))
    with pytest.raises(TypeError, match="known must be a .* got str"):
        filtered_ranks(s, t, "all")
    with pytest.raises(ValueError, match=r"known must be a \(B, N\) = \(3, 5\) bool mask"):
        filtered_ranks(s, t, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="target is on meta but scores are on cpu"):
        filtered_ranks(s, t.to("meta"))
