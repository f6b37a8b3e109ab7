"""Filtered link-prediction evaluation in both directions.

Tail prediction ranks ``t`` for the query ``(h, r)``; head prediction ranks ``h`` for
``(t, r + R)``. Entity representations are computed once per evaluation
(``model.encode()``), then queries are scored in batches against all entities.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from disenkg.datasets.kg import QueryIndex
from disenkg.evaluation.metrics import KS, rank_metrics
from disenkg.evaluation.ranks import Ranks, filtered_ranks

__all__ = ["LinkEvaluator", "LinkPredictor"]

logger = logging.getLogger(__name__)

RANK_TYPES = ("realistic", "optimistic", "pessimistic")


class LinkPredictor(Protocol):
    """What the evaluator needs from a model."""

    def encode(self) -> Any:
        """Entity/relation representations, computed once per evaluation."""

    def score(self, reps: Any, heads: Tensor, rels: Tensor) -> Tensor:
        """``(B, N)`` scores (higher = more plausible) of all entities as answers."""


class LinkEvaluator:
    """Scores queries in batches and reports filtered MRR, MR and Hits@k.

    Args:
        filter_index (QueryIndex): all true answers (train + valid + test).
        batch_size (int): queries per scoring batch. (default: ``256``)
        rank_type (str): headline ranks: ``"realistic"`` (mean of optimistic and
            pessimistic), ``"optimistic"`` or ``"pessimistic"``. (default: ``"realistic"``)
        ks (tuple[int, ...]): Hits@k cut-offs. (default: ``(1, 3, 10)``)
        progress (bool): show a tqdm bar. (default: ``True``)
    """

    def __init__(self, *, filter_index: QueryIndex, batch_size: int = 256,
                 rank_type: str = "realistic", ks: tuple[int, ...] = KS,
                 progress: bool = True) -> None:
        if rank_type not in RANK_TYPES:
            raise ValueError(f"unknown rank type {rank_type!r}; choose one of {list(RANK_TYPES)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.filter_index = filter_index
        self.batch_size = batch_size
        self.rank_type = rank_type
        self.ks = ks
        self.progress = progress

    @torch.no_grad()
    def ranks(self, model: LinkPredictor, triples: Tensor, desc: str = "eval"
              ) -> dict[str, Ranks]:
        """Filtered ranks for ``tail`` and ``head`` prediction of ``triples`` ``(n, 3)``."""
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            reps = model.encode()
            R = self.filter_index.num_relations
            h, r, t = triples.long().unbind(-1)
            out = {}
            for direction, (qh, qr, ans) in {
                "tail": (h, r, t), "head": (t, r + R, h)
            }.items():
                opt, pes = [], []
                for s in tqdm(range(0, len(qh), self.batch_size), disable=not self.progress,
                              desc=f"{desc} {direction}", leave=False):
                    bh, br, bt = (x[s:s + self.batch_size] for x in (qh, qr, ans))
                    device = _device_of(model)
                    scores = model.score(reps, bh.to(device), br.to(device)).float()
                    known = self.filter_index.lookup(bh, br)
                    rk = filtered_ranks(scores, bt.to(device),
                                        tuple(k.to(device) for k in known))
                    opt.append(rk.optimistic.cpu())
                    pes.append(rk.pessimistic.cpu())
                out[direction] = Ranks(torch.cat(opt), torch.cat(pes))
            return out
        finally:
            if was_training and hasattr(model, "train"):
                model.train()

    def evaluate(self, model: LinkPredictor, triples: Tensor, desc: str = "eval"
                 ) -> dict[str, Any]:
        """Metrics: ``{"mrr", "mr", "hits@k", "head": {...}, "tail": {...}, ...}``.

        The top-level values are over both directions together (for equal counts, the mean
        of head and tail, as in CompGCN/DisenKGAT). ``"optimistic"`` and ``"pessimistic"``
        hold the same metrics from those rank types.
        """
        ranks = self.ranks(model, triples, desc)
        return self.metrics(ranks)

    def metrics(self, ranks: dict[str, Ranks]) -> dict[str, Any]:
        def block(kind: str) -> dict[str, Any]:
            both = torch.cat([ranks["head"].get(kind), ranks["tail"].get(kind)])
            m: dict[str, Any] = rank_metrics(both, self.ks)
            m["head"] = rank_metrics(ranks["head"].get(kind), self.ks)
            m["tail"] = rank_metrics(ranks["tail"].get(kind), self.ks)
            return m

        out = block(self.rank_type)
        out["rank_type"] = self.rank_type
        for kind in RANK_TYPES:
            if kind != self.rank_type:
                out[kind] = block(kind)
        return out


def _device_of(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
