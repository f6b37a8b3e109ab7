r"""Completing a whole KG: the exact filtered top-k answers of every (entity, relation)
query in both directions, streamed in batches.

For every relation :math:`r` (in id order, or the order given) and direction (``tail``:
queries :math:`(e, r, ?)`; ``head``: :math:`(?, r, e)`, scored as :math:`(e, r^{-1}, ?)`),
and every entity :math:`e` (in id order, or the given subset), the answers are the top
:math:`k` entities by the model's ranking score with ties broken by entity id, known
triples removed (``filter="known"``), exactly as :meth:`TrainedRun.predict` orders them.

The encoder runs once; queries go through the scorer ``batch`` at a time, and each batch is
scored a tile of :data:`~disenkg.runs.trained.SCORE_TILE` entities at a time
(:meth:`TrainedRun.score_tiles <disenkg.runs.trained.TrainedRun.score_tiles>`, the same
tiles :meth:`~disenkg.runs.trained.TrainedRun.predict` scores): a ``(B, tile)`` block stays
in cache while the running top :math:`k` of :class:`~disenkg.ops.running_topk.RunningTopK`
takes it, so the ``(B, N)`` scores of a batch never exist and memory does not grow with the
number of queries. Known answers are looked up in the filter index (sparse; never a dense
mask), sorted by entity and set to :math:`-\infty` in the tiles they fall in. A run trained
with the softmax loss reports the softmax probability: a running log-sum-exp over the tiles.
The TSV lines are formatted by a C kernel where the native kernels build (NumPy otherwise,
the same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from disenkg.ops import native
from disenkg.ops.running_topk import RunningTopK

__all__ = ["COMPLETION_BATCH", "CompletionBatch", "DIRECTIONS", "complete", "open_writer"]

DIRECTIONS = ("tail", "head", "both")
#: queries scored at once by default: the query head's GEMMs run near their peak from
#: ~1 000 rows, and a (1 024, SCORE_TILE) float32 tile is 2 MB (in cache)
COMPLETION_BATCH = 1024


@dataclass(frozen=True)
class CompletionBatch:
    """The answers of a batch of queries of one relation and direction, one row each.

    Attributes:
        relation (int): the base relation id.
        direction (str): ``"tail"`` (the tail was predicted) or ``"head"``.
        query (np.ndarray): ``(M,)`` the given entity of each answer's query.
        answer (np.ndarray): ``(M,)`` the predicted entity.
        rank (np.ndarray): ``(M,)`` 1..k within its query.
        score (np.ndarray): ``(M,)`` the model's probability of the triple.
        last (bool): the last batch of this relation (all directions done).
    """

    relation: int
    direction: str
    query: np.ndarray
    answer: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    last: bool

    def heads_tails(self) -> tuple[np.ndarray, np.ndarray]:
        """``(head ids, tail ids)`` of the answer triples."""
        return ((self.query, self.answer) if self.direction == "tail"
                else (self.answer, self.query))


def complete(run: Any, *, k: int = 10, direction: str = "both",
             relations: Sequence[int] | None = None, entities: Sequence[int] | None = None,
             filter: str = "known", min_probability: float | None = None,
             batch_size: int | None = None, start_relation: int = 0,
             progress: Callable[[int], Any] | None = None,
             impl: str = "auto") -> Iterator[CompletionBatch]:
    """Yields the answers of every query, relation by relation (see the module docstring).

    Args:
        run: a :class:`~disenkg.runs.trained.TrainedRun`.
        k: answers per query.
        direction: ``"tail"``, ``"head"`` or ``"both"`` (tail, then head, per relation).
        relations: base relation ids (default: all, in id order).
        entities: the query entities (default: all, in id order).
        filter: ``"known"`` drops answers known from train / valid / test; ``"none"``.
        min_probability: drop answers whose probability is below it.
        batch_size: queries scored at once (default :data:`COMPLETION_BATCH`).
        start_relation: skip the first ``start_relation`` relations of ``relations`` (to
            continue an interrupted completion).
        progress: called with the number of queries of each finished batch.
        impl: the running top-k's kernel (:class:`~disenkg.ops.running_topk.RunningTopK`).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    if filter not in ("known", "none"):
        raise ValueError(f"filter must be 'known' or 'none', got {filter!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    ds = run.dataset
    N, R = ds.num_entities, ds.num_relations
    rels = list(range(R)) if relations is None else [int(r) for r in relations]
    ents = torch.arange(N) if entities is None else torch.as_tensor(list(entities),
                                                                    dtype=torch.long)
    B = batch_size or COMPLETION_BATCH
    dirs = ("tail", "head") if direction == "both" else (direction,)
    softmax = run.config["args"].get("loss", "bce") == "softmax"
    dev = run.device
    for ri in range(start_relation, len(rels)):
        r = rels[ri]
        for di, d in enumerate(dirs):
            rid = r if d == "tail" else r + R
            for s in range(0, len(ents), B):
                q = ents[s:s + B]
                rq = torch.full_like(q, rid)
                top = RunningTopK(rows=len(q), k=k, device=dev, impl=impl)
                lse = None
                if filter == "known":  # sorted by entity: each tile's known entries are a
                    kr, kc = run._known(q, rq)  # slice, set to -inf (never selected)
                    order = torch.argsort(kc, stable=True)
                    kr, kc = kr[order].to(dev), kc[order].to(dev)
                    kc_host = kc.cpu().numpy()
                for lo, tile in run.score_tiles(q, rq):
                    if softmax:  # the probability: the softmax over the whole row
                        t_lse = torch.logsumexp(tile, 1)
                        lse = t_lse if lse is None else torch.logaddexp(lse, t_lse)
                    if filter == "known" and len(kc):
                        a, b = np.searchsorted(kc_host, (lo, lo + tile.shape[1])).tolist()
                        if b > a:
                            tile[kr[a:b], kc[a:b] - lo] = -math.inf
                    top.update(tile, lo)
                row, col, rank, s_sel = top.result()
                if progress is not None:
                    progress(len(q))
                # probabilities of the selected answers only (elementwise for BCE runs)
                p = (torch.exp(s_sel - lse[row]) if softmax
                     else run.model.probability(s_sel))
                if min_probability is not None:
                    ok = p >= min_probability
                    row, col, rank, p = row[ok], col[ok], rank[ok], p[ok]
                yield CompletionBatch(
                    relation=r, direction=d, query=q[row.cpu()].numpy(),
                    answer=col.cpu().numpy(), rank=(rank + 1).cpu().numpy(),
                    score=p.float().cpu().numpy(),
                    last=di == len(dirs) - 1 and s + B >= len(ents))


# ---------------------------------------------------------------- writing
COLUMNS = ("head", "relation", "tail", "direction", "rank", "score")


class _TSV:
    """The TSV writer: lines formatted by the native kernel ``format_tsv_rows`` or, where
    the kernels do not build (or ``impl="eager"``), by NumPy (the same bytes)."""

    def __init__(self, path: Any, entity_names: Sequence[str],
                 relation_names: Sequence[str], append: bool, impl: str) -> None:
        self.entities = np.asarray(entity_names, dtype=object)
        self.relations = list(relation_names)
        self.native = native.use(impl, True, "")
        if self.native:
            enc = [n.encode("utf-8") for n in self.entities]
            self.name_bytes = np.frombuffer(b"".join(enc) or b"\0", dtype=np.uint8)
            self.offsets = np.zeros(len(enc) + 1, dtype=np.int64)
            np.cumsum([len(e) for e in enc], out=self.offsets[1:])
            self.longest = int(max((len(e) for e in enc), default=0))
        self.fh = open(path, "ab" if append else "wb")
        if not append:
            self.fh.write(("\t".join(COLUMNS) + "\n").encode("utf-8"))

    def write(self, batch: CompletionBatch) -> None:
        if not len(batch.query):
            return
        self.fh.write(self._native(batch) if self.native else self._numpy(batch))

    def _numpy(self, batch: CompletionBatch) -> bytes:
        cols = batch_columns(batch, self.entities, self.relations)
        tab = np.full(len(cols["head"]), "\t", dtype=object)
        line = (cols["head"] + tab + cols["relation"] + tab + cols["tail"] + tab
                + cols["direction"] + tab + cols["rank"].astype(str).astype(object) + tab
                + np.char.mod("%.6g", cols["score"]).astype(object))
        return ("\n".join(line.tolist()) + "\n").encode("utf-8")

    def _native(self, batch: CompletionBatch) -> bytes:
        h, t = (np.ascontiguousarray(x, dtype=np.int64) for x in batch.heads_tails())
        rank = np.ascontiguousarray(batch.rank, dtype=np.int32)
        score = np.ascontiguousarray(batch.score, dtype=np.float32)
        rel = self.relations[batch.relation].encode("utf-8")
        d = batch.direction.encode("ascii")
        n = len(h)
        cap = n * (2 * self.longest + len(rel) + len(d) + 4 + 24 + 40)
        out = np.empty(cap, dtype=np.uint8)
        ptr = lambda a: a.ctypes.data  # noqa: E731
        w = native.load().format_tsv_rows(ptr(h), ptr(t), ptr(rank), ptr(score), n,
                                          ptr(self.name_bytes), ptr(self.offsets), rel,
                                          len(rel), d, len(d), ptr(out), cap)
        if w < 0:  # the capacity is an upper bound: this is a bug, not bad input
            raise RuntimeError("format_tsv_rows: the line buffer was too small")
        return out[:w].tobytes()

    def tell(self) -> int:
        self.fh.flush()
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()


class _Parquet:
    def __init__(self, path: Any, entity_names: Sequence[str],
                 relation_names: Sequence[str], append: bool, impl: str) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            from disenkg.errors import ConfigError

            raise ConfigError("a .parquet output needs pyarrow, which is not installed",
                              hint='pip install "disenkg[parquet]" (or pyarrow)') from None
        if append:
            from disenkg.errors import ConfigError

            raise ConfigError("--resume continues TSV outputs; a Parquet file is written "
                              "in one go (start it again, or write .tsv)")
        self.pa = pa
        self.entities = np.asarray(entity_names, dtype=object)
        self.relations = list(relation_names)
        schema = pa.schema([("head", pa.string()), ("relation", pa.string()),
                            ("tail", pa.string()), ("direction", pa.string()),
                            ("rank", pa.int32()), ("score", pa.float32())])
        self.writer = pq.ParquetWriter(str(path), schema)
        self.schema = schema

    def write(self, batch: CompletionBatch) -> None:
        if len(batch.query):
            cols = batch_columns(batch, self.entities, self.relations)
            self.writer.write_table(self.pa.table({k: cols[k] for k in COLUMNS},
                                                  schema=self.schema))

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        self.writer.close()


def open_writer(path: Any, *, entity_names: Sequence[str], relation_names: Sequence[str],
                append: bool = False, impl: str = "auto") -> Any:
    """A TSV writer (header ``head relation tail direction rank score``) or, for a
    ``.parquet`` name, a Parquet writer (the ``parquet`` extra); ``write(batch)`` takes a
    :class:`CompletionBatch`. ``impl``: the TSV lines' formatter (``auto`` / ``native`` /
    ``eager``, NumPy)."""
    cls = _Parquet if str(path).endswith(".parquet") else _TSV
    return cls(path, entity_names, relation_names, append, impl)


def batch_columns(batch: CompletionBatch, entity_names: np.ndarray,
                  relation_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The output columns of a batch (names looked up with array indexing)."""
    h, t = batch.heads_tails()
    n = len(h)
    return {"head": entity_names[h], "tail": entity_names[t],
            "relation": np.full(n, relation_names[batch.relation], dtype=object),
            "direction": np.full(n, batch.direction, dtype=object),
            "rank": batch.rank.astype(np.int32), "score": batch.score.astype(np.float32)}
