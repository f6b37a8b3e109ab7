r"""Knowledge-graph datasets: id maps, splits, inverse relations and 1-N query indices.

Entities and relations get contiguous ids in order of first appearance over train, valid,
test (the CompGCN/DisenKGAT convention). For the head-prediction direction each triple
``(h, r, t)`` also yields the query ``(t, r + R)`` whose answer is ``h``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from disenkg.datasets.sources import resolve
from disenkg.datasets.triples import SPLITS, parse_triples, read_raw

__all__ = ["KGDataset", "QueryIndex", "index_dtype"]

logger = logging.getLogger(__name__)


class QueryIndex:
    r"""Sparse CSR map from queries ``(h, r)`` to their sets of true answers.

    Built from ``(n, 3)`` triples of which both directions are indexed:
    ``(h, r) -> t`` and ``(t, r + R) -> h``. Never holds a dense
    ``num_entities`` vector per query. Stored compactly: a query is its key
    :math:`h \cdot 2R + r`, and keys, offsets and answers are int32 wherever their range
    fits (:func:`index_dtype`), so one million triples take about 23 MB instead of 75.

    Args:
        triples (Tensor): ``(n, 3)`` long ``(head, relation, tail)`` with relation < R.
        num_entities (int): N.
        num_relations (int): R (without inverses).

    Attributes:
        keys (Tensor): ``(Q,)`` sorted unique query keys :math:`h \cdot 2R + r`.
        indptr (Tensor): ``(Q + 1,)`` CSR offsets into ``answers``.
        answers (Tensor): ``(nnz,)`` true answer entities, sorted within each query.
    """

    def __init__(self, triples: Tensor, num_entities: int, num_relations: int) -> None:
        self.num_entities = num_entities
        self.num_relations = num_relations
        R2 = 2 * num_relations
        if num_entities * R2 * num_entities >= 2**63:
            raise ValueError(f"{num_entities} entities x {R2} relations (with inverses) "
                             f"overflow the index's 64-bit (query, answer) keys")
        h, r, t = triples.long().unbind(-1)
        key = (torch.cat([h, t]) * R2 + torch.cat([r, r + num_relations])) * num_entities
        key += torch.cat([t, h])
        del h, r, t
        key = torch.unique(key)  # sorted, deduplicated
        self.answers = (key % num_entities).to(index_dtype(num_entities))
        keys, counts = torch.unique_consecutive(key // num_entities, return_counts=True)
        del key
        self.keys = keys.to(index_dtype(num_entities * R2))
        del keys
        self.indptr = torch.zeros(len(counts) + 1, dtype=index_dtype(len(self.answers) + 1))
        self.indptr[1:] = counts.cumsum(0)

    @classmethod
    def _of(cls, keys: Tensor, indptr: Tensor, answers: Tensor, num_entities: int,
            num_relations: int) -> QueryIndex:
        out = cls.__new__(cls)
        out.num_entities, out.num_relations = num_entities, num_relations
        out.keys, out.indptr, out.answers = keys, indptr, answers
        return out

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def queries(self) -> Tensor:
        """``(Q, 2)`` long ``(head, relation)`` of every query, sorted (built on each
        access; :meth:`pairs` takes a subset)."""
        return self.pairs()

    def pairs(self, ids: Tensor | None = None) -> Tensor:
        """``(len(ids), 2)`` long ``(head, relation)`` of queries ``ids`` (all if None)."""
        k = (self.keys if ids is None else self.keys[ids]).long()
        R2 = 2 * self.num_relations
        return torch.stack([k // R2, k % R2], dim=1)

    def batch(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Sparse targets of queries ``ids``: ``(rows, cols)`` with rows in ``[0, len(ids))``."""
        start, end = self.indptr[ids].long(), self.indptr[ids + 1].long()
        return _expand(start, end, self.answers)

    def lookup(self, heads: Tensor, rels: Tensor) -> tuple[Tensor, Tensor]:
        """True answers of arbitrary queries as ``(rows, cols)``; unknown queries have none."""
        key = heads.long().cpu() * (2 * self.num_relations) + rels.long().cpu()
        if not len(self.keys):
            return _expand(torch.zeros_like(key), torch.zeros_like(key), self.answers)
        pos = torch.searchsorted(self.keys, key.to(self.keys.dtype)).clamp_max(
            len(self.keys) - 1)
        found = self.keys[pos].long() == key
        start = torch.where(found, self.indptr[pos].long(), 0)
        end = torch.where(found, self.indptr[pos + 1].long(), 0)
        return _expand(start, end, self.answers)

    def restrict(self, lo: int, hi: int, *, keep_queries: bool = True) -> QueryIndex:
        """The answers in ``[lo, hi)`` only (global ids): an entity shard's share of the
        positives or of the filter (:mod:`disenkg.utils.entity_shards`). With
        ``keep_queries`` every query keeps its id (:meth:`batch` takes the same ids);
        without, the queries left with no answer are dropped (:meth:`lookup` is the same)."""
        keep = (self.answers >= lo) & (self.answers < hi)
        kept = torch.zeros(len(self.answers) + 1, dtype=torch.long)
        torch.cumsum(keep, 0, out=kept[1:])
        answers = self.answers[keep]
        del keep
        indptr, keys = kept[self.indptr.long()], self.keys
        del kept
        if not keep_queries:
            some = indptr[1:] > indptr[:-1]
            keys = keys[some]
            indptr = torch.cat([indptr[:1], indptr[1:][some]])
        return QueryIndex._of(keys, indptr.to(index_dtype(len(answers) + 1)), answers,
                              self.num_entities, self.num_relations)

    def nbytes(self) -> int:
        """Bytes held by the index's tensors."""
        return sum(x.numel() * x.element_size() for x in (self.keys, self.indptr, self.answers))


def index_dtype(bound: int) -> torch.dtype:
    """int32 when every value lies below ``bound`` <= 2^31, else int64."""
    return torch.int32 if bound <= 2**31 else torch.long


def _expand(start: Tensor, end: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    counts = end - start
    rows = torch.repeat_interleave(torch.arange(len(start)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
        counts.cumsum(0) - counts, counts
    )
    cols = values[torch.repeat_interleave(start, counts) + offsets].long()
    return rows, cols


def _fresh_labels(labels) -> list[str]:
    """New string objects for ``labels``, made while the parse's millions of short-lived
    strings and tuples still fill their memory, so that the labels land in memory of their
    own. Python's small-object allocator returns an arena to the system only once every
    object in it is free: labels kept where they were parsed (scattered among the freed
    triples) hold those arenas, and the process with them: loading a KG of 491 129
    entities and 1 M triples from files kept 341 MB resident for 55 MB of labels and
    triples, and 122 MB with the copies (``tests/datasets/test_kg_memory.py``)."""
    return [label.encode("utf-8").decode("utf-8") for label in labels]


@dataclass
class KGDataset:
    """A link-prediction dataset with contiguous ids.

    Attributes:
        name (str): dataset name.
        entities (list[str]): id -> entity label.
        relations (list[str]): id -> relation label (``R`` base relations).
        train, valid, test (Tensor): ``(n, 3)`` long triples.
        fingerprint (dict[str, str]): sha256 of each split file as read (``train``,
            ``valid``, ``test``), empty for a dataset built in memory.
    """

    name: str
    entities: list[str]
    relations: list[str]
    train: Tensor
    valid: Tensor
    test: Tensor
    fingerprint: dict[str, str] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        """Base relations R; models use ``2 R`` with the inverses."""
        return len(self.relations)

    @classmethod
    def load(cls, dataset: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
             allow_download: bool = True, max_archive_bytes: int | None = None) -> KGDataset:
        """Loads by name (see :func:`~disenkg.datasets.sources.resolve`) or path."""
        path = resolve(dataset, data_dir=data_dir, allow_download=allow_download)
        return cls.from_path(path, max_archive_bytes=max_archive_bytes)

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, max_archive_bytes: int | None = None
                  ) -> KGDataset:
        """Reads a directory or archive (see :func:`~disenkg.datasets.triples.read_raw`)
        and logs one WARNING per finding of :meth:`check`."""
        path = Path(path)
        raw = read_raw(path, max_bytes=max_archive_bytes)
        splits = {split: parse_triples(data, source) for split, (data, source) in raw.items()}
        digests = {split: hashlib.sha256(data).hexdigest() for split, (data, _) in raw.items()}
        ent: dict[str, int] = {}
        rel: dict[str, int] = {}
        tensors = {}
        dupes = {}
        for split in SPLITS:
            seen = dict.fromkeys(splits[split])  # ordered dedup
            dupes[split] = len(splits[split]) - len(seen)
            ids = [
                (ent.setdefault(h, len(ent)), rel.setdefault(r, len(rel)),
                 ent.setdefault(t, len(ent)))
                for h, r, t in seen
            ]
            tensors[split] = torch.tensor(ids, dtype=torch.long).view(-1, 3)
        if sum(dupes.values()):
            logger.warning("%s: removed %d duplicate triple(s) (%s)", path,
                           sum(dupes.values()),
                           ", ".join(f"{k}: {v}" for k, v in dupes.items() if v))
        name = path.name.split(".")[0] if path.is_file() else path.name
        # copied while the parsed triples are still alive (see _fresh_labels)
        entities, relations = _fresh_labels(ent), _fresh_labels(rel)
        del splits, seen, ids, ent, rel
        ds = cls(name, entities, relations, tensors["train"], tensors["valid"], tensors["test"],
                 fingerprint=digests)
        logger.info("%s", ds)
        for message in ds.check():
            logger.warning("%s: %s", path, message)
        return ds

    def check(self, examples: int = 3) -> list[str]:
        """Findings that change what the metrics mean, each with counts and examples:
        valid / test triples whose entities or relations never occur in train (the model
        has only its initialisation for them), and valid / test triples also in train."""
        out = []
        tr = self.train
        seen_e = torch.zeros(self.num_entities, dtype=torch.bool)
        seen_e[tr[:, 0]] = True
        seen_e[tr[:, 2]] = True
        seen_r = torch.zeros(self.num_relations, dtype=torch.bool)
        seen_r[tr[:, 1]] = True
        N, R = self.num_entities, max(1, self.num_relations)
        train_keys = set(((tr[:, 0] * R + tr[:, 1]) * N + tr[:, 2]).tolist())
        for split in ("valid", "test"):
            x = getattr(self, split)
            if not len(x):
                continue
            bad_e = ~(seen_e[x[:, 0]] & seen_e[x[:, 2]])
            if bad_e.any():
                ents = torch.unique(torch.cat([x[bad_e][:, 0], x[bad_e][:, 2]]))
                ents = ents[~seen_e[ents]]
                out.append(f"{int(bad_e.sum())} {split} triples use {len(ents)} entities "
                           f"never seen in train, e.g. "
                           f"{[self.entities[i] for i in ents[:examples].tolist()]}")
            bad_r = ~seen_r[x[:, 1]]
            if bad_r.any():
                rels = torch.unique(x[bad_r][:, 1])
                out.append(f"{int(bad_r.sum())} {split} triples use {len(rels)} relations "
                           f"never seen in train, e.g. "
                           f"{[self.relations[i] for i in rels[:examples].tolist()]}")
            keys = ((x[:, 0] * R + x[:, 1]) * N + x[:, 2]).tolist()
            dup = [i for i, k in enumerate(keys) if k in train_keys]
            if dup:
                ex = [tuple(self._names(x[i])) for i in dup[:examples]]
                out.append(f"{len(dup)} {split} triples also occur in train (they are "
                           f"filtered from each other's ranks but still scored), e.g. {ex}")
        return out

    def _names(self, triple: Tensor) -> tuple[str, str, str]:
        h, r, t = triple.tolist()
        return self.entities[h], self.relations[r], self.entities[t]

    def training_index(self) -> QueryIndex:
        """1-N training queries (both directions) from the train split."""
        return QueryIndex(self.train, self.num_entities, self.num_relations)

    def filter_index(self) -> QueryIndex:
        """All true answers from train + valid + test, for filtered evaluation."""
        return QueryIndex(torch.cat([self.train, self.valid, self.test]),
                          self.num_entities, self.num_relations)

    def graph(self) -> tuple[Tensor, Tensor]:
        """Training graph with inverse edges: ``edge_index (2, 2E)``, ``edge_type (2E,)``.

        Edge ``h -> t`` carries relation ``r``; its inverse ``t -> h`` carries ``r + R``.
        """
        h, r, t = self.train.unbind(-1)
        edge_index = torch.stack([torch.cat([h, t]), torch.cat([t, h])])
        edge_type = torch.cat([r, r + self.num_relations])
        return edge_index, edge_type

    def __repr__(self) -> str:
        return (
            f"KGDataset({self.name}, entities={self.num_entities}, "
            f"relations={self.num_relations}, train={len(self.train)}, "
            f"valid={len(self.valid)}, test={len(self.test)})"
        )
