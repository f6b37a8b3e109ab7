r"""Base class of link-prediction models scored as a K-component mixture.

A model produces, from representations computed once by :meth:`encode`:

* per-query component vectors ``query (B, K, F)`` and attention logits ``att (B, K)``;
* per-entity component vectors ``entity (N, K, F)`` and an optional bias ``(N,)``.

Training uses :func:`disenkg.ops.mixture_bce` (1-N BCE over all entities, never
materialising ``(B, K, N)`` on the chunked path); ranking uses
:func:`disenkg.ops.mixture_scores`. ``K = 1`` is the plain 1-N BCE model (ConvE etc.).

Entity sharding (:meth:`MixtureLinkModel.shard_entities`,
:mod:`disenkg.utils.entity_shards`): the model keeps only its rank's rows of the
per-entity parameters, :meth:`~MixtureLinkModel.candidates` and
:meth:`~MixtureLinkModel.score` cover those entities only, and :meth:`loss` is this
slice's share of the global mean (the shares of all ranks add up to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from disenkg.ops import mixture_bce, mixture_scores, softmax_cross_entropy
from disenkg.utils.entity_shards import EntityShard

__all__ = ["MixtureLinkModel"]


class MixtureLinkModel(nn.Module):
    """Abstract mixture link predictor (subclasses implement the three hooks).

    What the trainer uses, declared here: :meth:`encode`, :meth:`loss`,
    :meth:`regularization` (an extra loss term), :meth:`auxiliary_parameters` with
    :meth:`auxiliary_loss` and :attr:`auxiliary_lr` (a second optimiser's parameters and
    loss, e.g. DisenKGAT's CLUB estimators; none by default), :meth:`score`.
    """

    #: ``"after"`` mixes probabilities, ``"before"`` mixes logits.
    order: str = "after"
    #: K, the number of components (1 for single-vector models)
    num_components: int = 1
    #: learning rate of the optimiser of :meth:`auxiliary_parameters`
    auxiliary_lr: float = 1e-3
    #: this rank's slice of the entities when sharded (:meth:`shard_entities`), else None
    entity_shard: EntityShard | None = None

    def shard_entities(self, shard: EntityShard, *, halo_recompute: bool = True) -> None:
        """Keeps only ``shard``'s rows of the per-entity parameters (call before the
        optimiser is built; :meth:`sharded_parameters` names them). ``halo_recompute``:
        a graph encoder's sender rows from other shards are exchanged again in backward
        rather than held (:meth:`disenkg.utils.halo.Halo.extended`); models without a
        graph encoder ignore it."""
        raise NotImplementedError(f"{type(self).__name__} does not support entity sharding")

    def sharded_parameters(self) -> tuple[str, ...]:
        """Names (in :meth:`state_dict`) of the parameters split by entity rows."""
        return ()

    def entity_loads(self) -> Tensor | None:
        """``(N,)`` the graph encoder's work per entity (what ``--partition degree``
        balances over the shards), or ``None``: the model has no graph encoder."""
        return None

    def _shard_rows(self, names: tuple[str, ...], shard: EntityShard) -> None:
        """Replaces the parameters ``names`` (dotted) by ``shard``'s rows."""
        for name in names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.get_submodule(owner_name) if owner_name else self
            setattr(owner, attr, nn.Parameter(shard.slice(getattr(owner, attr).detach())))
        self.entity_shard = shard

    def _shard_loss_args(self, target):
        """``(target, total_entities)`` of this rank's share of the mean loss: the
        positives this rank owns (entity ids made local) and the whole entity count, by
        which (times the queries) the share's sum is divided (an in-op scale: a loss
        scaled after the fused op would copy its saved gradients in backward)."""
        shard = self.entity_shard
        if shard is None:
            return target, None
        if isinstance(target, (tuple, list)):
            target = shard.local_pairs(*target)
        else:
            target = target[:, shard.lo:shard.hi]
        return target, shard.num_entities

    def encode(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def query(self, reps: Any, heads: Tensor, rels: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover

    def candidates(self, reps: Any) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError  # pragma: no cover

    def regularization(self, reps: Any, heads: Tensor) -> Tensor | None:
        """Extra training loss for a batch of queries with subjects ``heads`` (e.g. mutual
        information between components); ``None`` when there is none."""
        return None

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by a second optimiser on :meth:`auxiliary_loss` instead of
        the main loss (excluded from the main optimiser); none by default."""
        return []

    @property
    def auxiliary_reads_reps(self) -> bool:
        """Whether :meth:`auxiliary_loss` reads the step's ``reps`` (``False``: it
        recomputes what it needs and takes ``None``, so the step's encoder graph can go
        before it runs)."""
        return True

    def auxiliary_loss(self, reps: Any, heads: Tensor) -> Tensor:
        """The loss of :meth:`auxiliary_parameters` for a batch with subjects ``heads``."""
        raise NotImplementedError(f"{type(self).__name__} has no auxiliary parameters")

    def loss(self, reps: Any, heads: Tensor, rels: Tensor,
             target: Tensor | tuple[Tensor, Tensor], *, label_smoothing: float = 0.0,
             impl: str = "auto", precision: str = "fp32",
             total_queries: int | None = None) -> Tensor:
        """Mean 1-N BCE of the queries ``(heads, rels)`` against all entities (``impl``,
        ``precision`` and ``total_queries``, the batch these queries are a slice of, as in
        :func:`~disenkg.ops.mixture_bce`)."""
        q, att = self.query(reps, heads, rels)
        ent, bias = self.candidates(reps)
        target, total = self._shard_loss_args(target)
        return mixture_bce(q, ent, att, target, bias=bias, label_smoothing=label_smoothing,
                           order=self.order, impl=impl, precision=precision,
                           total_entities=total, total_queries=total_queries)

    def softmax_loss_problem(self) -> str | None:
        """Why :meth:`softmax_loss` cannot train this model, or ``None`` when it can."""
        if self.entity_shard is not None:
            return ("the softmax loss normalises over all entities; it does not run "
                    f"entity-sharded ({self.entity_shard.num_shards} shards)")
        if self._k > 1 and self.order != "before":
            return (f"the softmax loss needs logits: K = 1 or order 'before', got "
                    f"K = {self._k} with order {self.order!r}")
        return None

    def softmax_loss(self, reps: Any, heads: Tensor, rels: Tensor,
                     target: Tensor | tuple[Tensor, Tensor], *,
                     label_smoothing: float = 0.0) -> Tensor:
        """Mean 1-N softmax cross-entropy of the queries ``(heads, rels)`` over all entities
        (:func:`~disenkg.ops.softmax_cross_entropy` of the :meth:`score` logits). Needs
        logits: ``K = 1`` or order ``before``; and all entities (no entity sharding)."""
        problem = self.softmax_loss_problem()
        if problem is not None:
            raise ValueError(problem)
        return softmax_cross_entropy(self.score(reps, heads, rels), target,
                                     label_smoothing=label_smoothing)

    def score(self, reps: Any, heads: Tensor, rels: Tensor) -> Tensor:
        """``(B, N)`` ranking scores (log-probability for ``after``, logit for ``before``);
        sharded, ``(B, hi - lo)``: this rank's entities."""
        q, att = self.query(reps, heads, rels)
        ent, bias = self.candidates(reps)
        return mixture_scores(q, ent, att, bias, self.order)

    def score_tiles(self, reps: Any, heads: Tensor, rels: Tensor, *,
                    tile: int) -> Iterator[tuple[int, Tensor]]:
        """``(lo, scores)`` of consecutive tiles of ``tile`` candidate entities: ``scores``
        ``(B, hi - lo)`` are the columns ``lo .. hi - 1`` of :meth:`score`, the query side
        computed once (so a caller never needs all ``(B, N)`` scores at once)."""
        q, att = self.query(reps, heads, rels)
        ent, bias = self.candidates(reps)
        for lo in range(0, ent.shape[0], tile):
            b = None if bias is None else bias[lo:lo + tile]
            yield lo, mixture_scores(q, ent[lo:lo + tile], att, b, self.order)

    @torch.no_grad()
    def predict_proba(self, heads: Tensor, rels: Tensor) -> Tensor:
        """``(B, N)`` probabilities (``after``) or sigmoids of mixed logits (``before``)."""
        return self.probability(self.score(self.encode(), heads, rels))

    def probability(self, scores: Tensor) -> Tensor:
        """Probabilities from :meth:`score` values: ``exp`` of a mixture log-probability
        (``after``, K > 1), else the sigmoid of a (mixed) logit."""
        return scores.exp() if self.order == "after" and self._k > 1 else torch.sigmoid(scores)

    @property
    def _k(self) -> int:
        return int(self.num_components)
