"""A trained link-prediction run, loaded from its run directory: predict, score, evaluate,
export, inspect.

>>> run = load_run("runs/umls-disenkgat")                       # doctest: +SKIP
>>> run.predict_tails("acquired_abnormality", "location_of", k=3)  # doctest: +SKIP
[{'entity': ..., 'score': ..., 'probability': ..., 'known': False}, ...]

The command line (``python -m disenkg.run predict|score|evaluate|export|inspect``) calls
these methods, so predictions from Python and from the CLI come from the same code.
Scores are the evaluator's ranking scores (:meth:`MixtureLinkModel.score`: the mixture
log-probability for DisenKGAT's ``after`` order, else a logit) and ``probability`` is the
model's probability of the triple: the sigmoid (or mixture) probability of a BCE-trained
run, and for a run trained with ``--loss softmax`` the softmax of the scores over all
entities (the probability that this entity is the answer; a query's add up to 1).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from disenkg.datasets.kg import KGDataset
from disenkg.datasets.triples import DatasetError, parse_triples
from disenkg.errors import CheckpointError, RunDirError, UserError
from disenkg.evaluation import LinkEvaluator
from disenkg.models.base import MixtureLinkModel
from disenkg.runs.checkpoint import load_checkpoint
from disenkg.runs.rundir import RunDir

__all__ = ["FILTERS", "SCORE_TILE", "TrainedRun", "load_run", "read_queries"]

#: ``known``: drop answers known from train / valid / test; ``none``: keep and mark them
FILTERS = ("known", "none")
#: queries scored at once by predict / score (their ``(B, N)`` scores bound the memory)
QUERY_BATCH = 256
#: candidate entities scored at once (:meth:`TrainedRun.score_tiles`): a ``(1 024, 512)``
#: float32 tile is 2 MB, and on a 2-core AMD EPYC (Zen 3) the ``(B, 200) x (200, 512)``
#: score GEMMs ran at 2.3x the speed of one ``(B, 200) x (200, 14 541)`` GEMM over all of
#: FB15k-237's entities (93 vs 41 GFLOPS at B = 577, 138 vs 41 at B = 1 024)
SCORE_TILE = 512


def load_run(path: str | os.PathLike, *, device: str | torch.device = "cpu",
             checkpoint: str = "best") -> TrainedRun:
    """Loads a run directory written by ``python -m disenkg.run link`` (or :func:`train`).

    Args:
        path: the run directory.
        device: where the model runs. (default: ``"cpu"``)
        checkpoint: ``"best"`` (best validation MRR) or ``"last"``. (default: ``"best"``)
    """
    return TrainedRun.load(path, device=device, checkpoint=checkpoint)


class TrainedRun:
    """A trained model with its dataset's names and splits (see :func:`load_run`).

    Args:
        run_dir (RunDir): where it was loaded from.
        model (MixtureLinkModel): the model, in evaluation mode.
        dataset (KGDataset): names and id triples as the run saw them.
        config (dict): the run's ``config.json``.
    """

    def __init__(self, *, run_dir: RunDir, model: MixtureLinkModel, dataset: KGDataset,
                 config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.model = model.eval()
        self.dataset = dataset
        self.config = config
        self._entity_ids = {n: i for i, n in enumerate(dataset.entities)}
        self._relation_ids = {n: i for i, n in enumerate(dataset.relations)}
        self._reps: Any = None
        self._filter = None

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
             checkpoint: str = "best") -> TrainedRun:
        from disenkg.models.registry import MODELS

        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        rd = RunDir(path)
        if not rd.path.is_dir():
            raise RunDirError(f"run directory {rd.path} does not exist")
        rd.verify()
        config = rd.read_config()
        if config.get("task") != "link":
            raise RunDirError(f"{rd.path} holds a {config.get('task')!r} run; only link "
                              f"prediction runs can be loaded")
        ds = rd.load_dataset()
        args = config.get("args")
        if config.get("model") not in MODELS.names() or not isinstance(args, dict):
            raise RunDirError(f"{rd.file('config.json')} is damaged: expected a 'model' of "
                              f"{MODELS.names()} and an 'args' object, got model "
                              f"{config.get('model')!r} and args of type "
                              f"{type(args).__name__}")
        spec = MODELS.get(config["model"])
        model = spec.build(ds, spec.config.from_values(args), seed=args.get("seed", 0))
        state = load_checkpoint(rd.file(f"{checkpoint}.pt"), required=("model",))
        rd.check_checkpoint(state, rd.file(f"{checkpoint}.pt"))
        bad = [k for k, v in state["model"].items()
               if isinstance(v, torch.Tensor) and v.is_floating_point()
               and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"{rd.file(f'{checkpoint}.pt')} holds non-finite weights "
                                  f"(NaN or inf) in {bad[:3]}{' ...' if len(bad) > 3 else ''}; "
                                  "its predictions would be meaningless",
                                  hint="use the other checkpoint (--checkpoint last / best) or "
                                       "retrain")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise RunDirError(f"{rd.file(f'{checkpoint}.pt')} does not fit the model of "
                              f"{rd.file('config.json')}: {str(err).splitlines()[0]}") from err
        return cls(run_dir=rd, model=model.to(torch.device(device)), dataset=ds,
                   config=config)

    def __repr__(self) -> str:
        return (f"TrainedRun({str(self.run_dir.path)!r}, model={self.config.get('model')!r}, "
                f"dataset={self.dataset.name!r})")

    # ------------------------------------------------------------------ names
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def entity_id(self, name: str) -> int:
        return _lookup(self._entity_ids, name, "entity")

    def relation_id(self, name: str) -> int:
        return _lookup(self._relation_ids, name, "relation")

    # ------------------------------------------------------------------ scoring
    def _representations(self) -> Any:
        if self._reps is None:
            with torch.no_grad():
                self._reps = self.model.encode()
        return self._reps

    def scores(self, heads: Tensor, rels: Tensor) -> Tensor:
        """``(B, N)`` ranking scores of all entities for the id queries ``(heads, rels)``
        (``rels >= R`` are the inverse relations, i.e. head prediction): the tiles of
        :meth:`score_tiles` side by side, so a completion scores exactly the same values."""
        return torch.cat([t for _, t in self.score_tiles(heads, rels)], 1).cpu()

    def score_tiles(self, heads: Tensor, rels: Tensor) -> Iterator[tuple[int, Tensor]]:
        """``(lo, scores)``: the ranking scores of the candidate entities ``lo .. lo +``
        :data:`SCORE_TILE` ``- 1`` for the queries, ``(B, tile)`` float32 on the model's
        device (:meth:`MixtureLinkModel.score_tiles`)."""
        reps = self._representations()
        tiles = self.model.score_tiles(reps, heads.to(self.device), rels.to(self.device),
                                       tile=SCORE_TILE)
        while True:  # no_grad around each step only: the caller's code keeps its mode
            with torch.no_grad():
                item = next(tiles, None)
            if item is None:
                return
            yield item[0], item[1].float()

    def probabilities(self, scores: Tensor) -> Tensor:
        """``(B, N)`` probabilities from the ``(B, N)`` :meth:`scores` of whole queries: the
        softmax over the entities for a run trained with the softmax loss, else the
        model's per-triple probability (:meth:`MixtureLinkModel.probability`)."""
        if self.config["args"].get("loss", "bce") == "softmax":
            return torch.softmax(scores, dim=1)
        return self.model.probability(scores)

    def _known(self, heads: Tensor, rels: Tensor) -> tuple[Tensor, Tensor]:
        if self._filter is None:
            self._filter = self.dataset.filter_index()
        return self._filter.lookup(heads, rels)

    def predict(self, queries: list[tuple[str | None, str, str | None]], *, k: int = 10,
                filter: str = "known") -> list[list[dict[str, Any]]]:
        """Top-``k`` answers of each query ``(head, relation, None)`` (rank tails) or
        ``(None, relation, tail)`` (rank heads).

        Returns, per query, a list of ``{"entity", "score", "probability", "known"}``
        sorted by score (ties by entity id); ``known`` says the triple is in train, valid
        or test, and ``filter="known"`` removes those answers.
        """
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; choose one of {list(FILTERS)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        R = self.dataset.num_relations
        heads, rels = [], []
        for i, (h, r, t) in enumerate(queries):
            if (h is None) == (t is None):
                raise UserError(f"query {i + 1} ({h}, {r}, {t}): give exactly one of head "
                                f"and tail")
            rid = self.relation_id(r)
            if t is None:
                heads.append(self.entity_id(h))
                rels.append(rid)
            else:
                heads.append(self.entity_id(t))
                rels.append(rid + R)
        out: list[list[dict[str, Any]]] = []
        for s in range(0, len(heads), QUERY_BATCH):  # memory: QUERY_BATCH x N scores
            hq = torch.tensor(heads[s:s + QUERY_BATCH])
            rq = torch.tensor(rels[s:s + QUERY_BATCH])
            out += self._top(hq, rq, k, filter)
        return out

    def _top(self, hq: Tensor, rq: Tensor, k: int, filter: str) -> list[list[dict[str, Any]]]:
        scores = self.scores(hq, rq)
        prob = self.probabilities(scores)
        known = torch.zeros_like(scores, dtype=torch.bool)
        kr, kc = self._known(hq, rq)
        known[kr, kc] = True
        ranked = scores.masked_fill(known, float("-inf")) if filter == "known" else scores
        out = []
        for b in range(len(hq)):
            # stable order: by score, then by entity id
            order = torch.argsort(ranked[b], descending=True, stable=True)
            if filter == "known":
                order = order[~known[b, order]]
            order = order[:k]
            out.append([{"entity": self.dataset.entities[int(n)],
                         "score": float(scores[b, n]), "probability": float(prob[b, n]),
                         "known": bool(known[b, n])} for n in order])
        return out

    def complete(self, *, k: int = 10, direction: str = "both",
                 relations: list[str] | None = None, entities: list[str] | None = None,
                 filter: str = "known", min_probability: float | None = None,
                 batch_size: int | None = None) -> Any:
        """The top-``k`` answers of every (entity, relation) query, an iterator of
        :class:`~disenkg.runs.complete.CompletionBatch` (ids; names in
        :attr:`dataset`): see :func:`disenkg.runs.complete.complete`. ``relations`` and
        ``entities`` restrict it by name."""
        from disenkg.runs.complete import complete

        return complete(self, k=k, direction=direction,
                        relations=None if relations is None else
                        [self.relation_id(r) for r in relations],
                        entities=None if entities is None else
                        [self.entity_id(e) for e in entities],
                        filter=filter, min_probability=min_probability,
                        batch_size=batch_size)

    def predict_tails(self, head: str, relation: str, *, k: int = 10,
                      filter: str = "known") -> list[dict[str, Any]]:
        """The top-``k`` tails of ``(head, relation, ?)`` (see :meth:`predict`)."""
        return self.predict([(head, relation, None)], k=k, filter=filter)[0]

    def predict_heads(self, tail: str, relation: str, *, k: int = 10,
                      filter: str = "known") -> list[dict[str, Any]]:
        """The top-``k`` heads of ``(?, relation, tail)`` (see :meth:`predict`)."""
        return self.predict([(None, relation, tail)], k=k, filter=filter)[0]

    def score(self, triples: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        """The model's score and probability of each ``(head, relation, tail)`` triple
        (the tail-prediction direction, as :meth:`predict_tails` ranks them)."""
        ids = [(self.entity_id(h), self.relation_id(r), self.entity_id(t))
               for h, r, t in triples]
        if not ids:
            return []
        x = torch.tensor(ids)
        picked, p = [], []
        for b in range(0, len(x), QUERY_BATCH):  # memory: QUERY_BATCH x N scores
            xb = x[b:b + QUERY_BATCH]
            s = self.scores(xb[:, 0], xb[:, 1])
            rows = torch.arange(len(xb))
            picked.append(s[rows, xb[:, 2]])
            p.append(self.probabilities(s)[rows, xb[:, 2]])
        pk, pp = torch.cat(picked), torch.cat(p)
        return [{"head": h, "relation": r, "tail": t, "score": float(pk[i]),
                 "probability": float(pp[i])} for i, (h, r, t) in enumerate(triples)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, split: str | os.PathLike = "test", *, batch_size: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
        """Filtered metrics, as training reported them, on ``"valid"``, ``"test"`` or a
        TSV file of named triples (which then also joins the filter)."""
        args = self.config["args"]
        extra = None
        if str(split) in ("valid", "test"):
            triples = getattr(self.dataset, str(split))
        else:
            path = Path(split)
            if not path.is_file():
                raise UserError(f"--split {split}: not 'valid', 'test' or an existing file")
            named = parse_triples(path.read_bytes(), str(path))
            triples = torch.tensor([self._triple_ids(t, f"{path} triple {i + 1}")
                                    for i, t in enumerate(named)], dtype=torch.long)
            extra = triples
        index = self.dataset.filter_index() if extra is None else _filter_with(
            self.dataset, extra)
        ev = LinkEvaluator(filter_index=index,
                           batch_size=batch_size or args.get("eval_batch_size", 256),
                           rank_type=args.get("rank_type", "realistic"), progress=progress)
        return ev.evaluate(self.model, triples, desc=str(split))

    def _triple_ids(self, triple: tuple[str, str, str], where: str) -> tuple[int, int, int]:
        h, r, t = triple
        try:
            return self.entity_id(h), self.relation_id(r), self.entity_id(t)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None

    # ------------------------------------------------------------------ inspection
    def embeddings(self) -> dict[str, Any]:
        """Entity and relation embeddings as NumPy arrays, with their names.

        ``entity``: ``(N, K, F)`` for DisenKGAT (the encoder output, per component) or
        ``(N, D)`` for ConvE; ``relation``: ``(2R, F)``, rows ``R..2R-1`` the inverses;
        ``entity_names`` / ``relation_names`` in id order (inverses named ``NAME^-1``).
        """
        reps = self._representations()
        return {"entity": reps.entity.detach().float().cpu().numpy(),
                "relation": reps.relation.detach().float().cpu().numpy(),
                "entity_names": list(self.dataset.entities),
                "relation_names": self.relation_names()}

    def relation_names(self) -> list[str]:
        """The ``2R`` relation names the model scores with (inverses as ``NAME^-1``)."""
        return [*self.dataset.relations, *(f"{r}^-1" for r in self.dataset.relations)]

    def component_attention(self) -> np.ndarray:
        """``(2R, K)`` mean component attention (softmax over the K components) of each
        relation over the training queries that use it (rows of unused relations are NaN)."""
        self._require_components("component attention")
        idx = self.dataset.training_index()
        q = idx.queries
        reps = self._representations()
        with torch.no_grad():
            _, att = self.model.query(reps, q[:, 0].to(self.device), q[:, 1].to(self.device))
            a = torch.softmax(att.float(), dim=-1).cpu()
        R2, K = 2 * self.dataset.num_relations, a.shape[1]
        sums = torch.zeros(R2, K, dtype=torch.float64).index_add_(0, q[:, 1], a.double())
        counts = torch.bincount(q[:, 1], minlength=R2).double().unsqueeze(1)
        return (sums / counts).numpy()

    def neighbours(self, entity: str) -> list[dict[str, Any]]:
        """The edges an entity receives messages over in the last layer, with the
        per-component edge attention (softmax over its incoming edges, per component).

        Each item: ``{"neighbour", "relation", "triple", "attention"}``; ``triple`` is the
        KG triple the edge comes from, ``(entity, relation, neighbour)`` for a relation's
        own direction, ``(neighbour, relation, entity)`` for its inverse; the self loop has
        ``relation = "(self)"``.
        """
        self._require_components("edge attention")
        i = self.entity_id(entity)
        with torch.no_grad():
            _, attention = self.model.encode(return_attention=True)
        if not attention:
            raise UserError("this model has no message-passing layers (num_layers = 0)")
        alpha = attention[-1].float().cpu()
        N, R = self.dataset.num_entities, self.dataset.num_relations
        ei, et = self.model.message_index.cpu(), self.model.edge_type.cpu()
        loops = torch.arange(N)
        src = torch.cat([ei[0], loops])
        dst = torch.cat([ei[1], loops])
        typ = torch.cat([et, torch.full((N,), 2 * R, dtype=et.dtype)])
        rows = []
        names, rels = self.dataset.entities, self.dataset.relations
        for e in torch.nonzero(dst == i).flatten().tolist():
            s, t = int(src[e]), int(typ[e])
            if t == 2 * R:
                rel, triple = "(self)", None
            elif t < R:
                rel, triple = rels[t], (names[i], rels[t], names[s])
            else:
                rel, triple = f"{rels[t - R]}^-1", (names[s], rels[t - R], names[i])
            rows.append({"neighbour": names[s], "relation": rel, "triple": triple,
                         "attention": alpha[e].tolist()})
        rows.sort(key=lambda r: -max(r["attention"]))
        return rows

    def _require_components(self, what: str) -> None:
        if not hasattr(self.model, "component_attention"):
            raise UserError(f"{what} needs a DisenKGAT run; {self.run_dir.path} holds "
                            f"{self.config.get('model')!r}")


def _lookup(ids: dict[str, int], name: str, what: str) -> int:
    if not isinstance(name, str):
        raise UserError(f"{what}: expected a name (str), got {type(name).__name__} {name!r}")
    if name in ids:
        return ids[name]
    close = difflib.get_close_matches(name, list(ids), n=5)
    plural = "entities" if what == "entity" else f"{what}s"
    raise UserError(f"unknown {what} {name!r}" + (f"; closest: {', '.join(close)}" if close
                                                  else f" (the run has {len(ids)} {plural})"))


def _filter_with(ds: KGDataset, extra: Tensor):
    from disenkg.datasets.kg import QueryIndex

    return QueryIndex(torch.cat([ds.train, ds.valid, ds.test, extra]), ds.num_entities,
                      ds.num_relations)


def read_queries(path: Path) -> list[tuple[str | None, str, str | None]]:
    """Queries from a TSV file: ``head<TAB>relation<TAB>?`` or ``?<TAB>relation<TAB>tail``."""
    out = []
    for i, (h, r, t) in enumerate(parse_triples(path.read_bytes(), str(path))):
        if (h == "?") == (t == "?"):
            raise DatasetError(f"{path} query {i + 1} ({h}, {r}, {t}): put '?' in exactly "
                               f"one of the head and tail fields")
        out.append((None if h == "?" else h, r, None if t == "?" else t))
    return out
