r"""DisenKGAT: knowledge-graph embedding with disentangled graph attention
(Wu et al., CIKM 2021, https://arxiv.org/abs/2106.02758).

Encoder: a base embedding :math:`e^0_n \in \mathbb R^{d_0}` is projected into K components,
:math:`x_n = \tanh(W e^0_n + b) \in \mathbb R^{K \times F}`, then refined by stacked
:class:`~disenkg.nn.conv.DisenConv` layers (relation-aware, per-component edge softmax) and
dropout. Decoder: for a query :math:`(h, r)` every component is scored by a shared scorer,
:math:`x_{k}(h, r, t)`, and mixed with the component attention
:math:`a = \mathrm{softmax}_k(\mathrm{LeakyReLU}(s(h, r)))`:

.. math::
    p(t \mid h, r) = \sum_k a_k\, \sigma(x_k(h, r, t)) \quad(\text{after}),\qquad
    \sigma\big(\textstyle\sum_k a_k\, x_k(h, r, t)\big) \quad(\text{before}).

Training: 1-N BCE with label smoothing (fused, :func:`~disenkg.ops.mixture_bce`) plus
``mi_weight`` times a dependence penalty between components of the batch's query entities
(:data:`~disenkg.nn.mi.MI_ESTIMATORS`). CLUB estimators :math:`q_\phi` are fitted by their
own optimiser (:meth:`auxiliary_loss`, the negative log-likelihood of the component pairs).
By default (``mi_recompute=True``, the authors' schedule) each step is

.. math::
    \theta_{t+1} = \mathrm{Adam}\big(\nabla_\theta [\mathrm{BCE}(\theta_t)
        + \alpha\, \mathrm{CLUB}_{\phi_t}(z(\theta_t))]\big),\qquad
    \phi_{t+1} = \mathrm{Adam}\big(\nabla_\phi\, \mathrm{NLL}_{\phi_t}(z'(\theta_{t+1}))\big)

with :math:`z'` a second encoder pass (fresh dropout, no graph). ``mi_recompute=False``
saves that pass and fits :math:`\phi_{t+1}` on :math:`z(\theta_t)`, detached, after the
step: an estimator fitted on the very sample it scores, one step behind the encoder. On
UMLS its penalty turned negative and diverged after ~13 epochs in every seed of the
comparison with the authors' code (``experiments/results/reference_umls.md``); it is
kept to resume and reproduce runs made with it.

Entity-sharded (:meth:`DisenKGAT.shard_entities`, ``--entity-shards S`` under
``torchrun``), the encoder is partitioned by receiver: shard ``s`` holds the base
embeddings of its entities, the edges ending at them, and their encoder rows
(activations included); each layer reads the sender rows it lacks from their owners (the
halo exchange of :class:`~disenkg.utils.halo.Halo`), and its batch norm counts every
shard's rows. A query's subject row comes from its owner
(:meth:`EntityShard.lookup <disenkg.utils.entity_shards.EntityShard.lookup>`), and each
shard scores the batch against its own rows. Loss, gradients and metrics equal one
process's (float64 to rounding); the encoder's dropout masks are drawn per shard
(one process draws others: the same law, not the same masks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from disenkg.models.base import MixtureLinkModel
from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.conv import DisenConv
from disenkg.nn.dropout import Dropout
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import InteractEScorer, Scorer
from disenkg.ops.mixture_bce.eager import mixture_loss_from_logits, mixture_scores_from_logits
from disenkg.utils.halo import Halo

__all__ = ["DisenKGAT", "DisenKGATReps"]


@dataclass
class DisenKGATReps:
    entity: Tensor  # (N, K, F) encoder output (entity-sharded: this shard's rows)
    relation: Tensor  # (2R, F) relation embeddings used by the decoder


class DisenKGAT(MixtureLinkModel):
    r"""DisenKGAT link predictor.

    Args:
        num_entities (int): N.
        num_relations (int): R base relations (inverses are ``r + R``).
        edge_index (Tensor): ``(2, E)`` the KG's edges in their natural direction, row 0 the
            head and row 1 the tail of each triple ``(h, r, t)``, inverse edges
            ``(t, r + R, h)`` included: what :meth:`KGDataset.graph()
            <disenkg.datasets.KGDataset.graph>` returns.
        edge_type (Tensor): ``(E,)`` relation of each edge in ``[0, 2R)``.
        num_components (int): K. (default: ``3``)
        init_dim (int): base embedding size. (default: ``100``)
        channels (int): F per component. (default: ``200``)
        num_layers (int): stacked layers. (default: ``1``)
        composition (str): ``sub``/``mult``/``cross``/``corr``. (default: ``"cross"``)
        edge_attention (str): layer attention mode. (default: ``"dot_weight"``)
        attention_dropout (float): on edge attention weights. (default: ``0.4``)
        encoder_dropout (float): on the encoder output. (default: ``0.3``)
        layer_bias (bool): bias in the layers. (default: ``False``)
        scorer (Scorer, optional): per-component scorer; default InteractE with the
            authors' settings for ``F = 200``.
        component_attention (str): ``dot_rel``/``dot_sub``/``cat_rel``/``cat_sub``/``learn``.
            (default: ``"dot_rel"``)
        order (str): ``after`` (mix probabilities) or ``before`` (mix logits).
            (default: ``"after"``)
        mi_estimator (str, optional): ``club_b``/``club_s``/``dcor``/``hsic`` or ``None``.
            (default: ``"club_b"``)
        mi_weight (float): weight of the dependence penalty (``alpha``). (default: ``0.1``)
        mi_lr (float): learning rate of the CLUB estimators' optimiser. (default: ``1e-3``)
        mi_recompute (bool): fit the CLUB estimators after the main step on a fresh
            encoder pass (the authors' schedule); ``False`` fits them on the step's own
            embeddings, detached (no extra pass; unstable, see above). (default: ``True``)
        encoder_impl (str): the layers' ``impl``: ``auto``/``native``/``chunked``/``eager``,
            see :class:`~disenkg.nn.conv.DisenConv` and :mod:`disenkg.ops.impls`.
            (default: ``"auto"``)

    Shapes:
        ``query``: ``(B, K, F')`` and ``(B, K)`` attention logits; ``candidates``:
        ``(N, K, F')`` and bias ``(N,)``.
    """

    def __init__(self, *, num_entities: int, num_relations: int, edge_index: Tensor,
                 edge_type: Tensor, num_components: int = 3, init_dim: int = 100,
                 channels: int = 200, num_layers: int = 1, composition: str = "cross",
                 edge_attention: str = "dot_weight", attention_dropout: float = 0.4,
                 encoder_dropout: float = 0.3, layer_bias: bool = False,
                 scorer: Scorer | None = None, component_attention: str = "dot_rel",
                 order: str = "after", mi_estimator: str | None = "club_b",
                 mi_weight: float = 0.1, mi_lr: float = 1e-3, mi_recompute: bool = True,
                 encoder_impl: str = "auto") -> None:
        super().__init__()
        if order not in ("after", "before"):
            raise ValueError(f"unknown order {order!r}; choose one of ['after', 'before']")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_type.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_type must have shape ({edge_index.shape[1]},), got "
                             f"{tuple(edge_type.shape)}")
        self.num_entities, self.num_relations = num_entities, num_relations
        self.num_components, self.channels = num_components, channels
        self.order = order
        # The authors' convention, owned here: the head of (h, r, t) receives the tail's
        # message through r, so messages run against the edge, tail -> head.
        self.register_buffer("message_index", edge_index.long().flip(0), persistent=False)
        self.register_buffer("edge_type", edge_type.long(), persistent=False)
        self.init_embed = nn.Parameter(torch.empty(num_entities, init_dim))
        self.init_rel = nn.Parameter(torch.empty(2 * num_relations, channels))
        self.proj = nn.Linear(init_dim, num_components * channels)
        self.layers = nn.ModuleList(
            DisenConv(num_entities=num_entities, num_relations=num_relations,
                      num_components=num_components, channels=channels,
                      composition=composition, attention=edge_attention,
                      attention_dropout=attention_dropout, bias=layer_bias, impl=encoder_impl)
            for _ in range(num_layers))
        # Relation weights for the decoder: the last layer's, else a fresh table.
        self._own_rel_weight = (nn.Parameter(torch.empty(2 * num_relations + 1, num_components,
                                                         channels)) if num_layers == 0 else None)
        self.encoder_drop = Dropout(encoder_dropout)
        self.scorer = scorer if scorer is not None else InteractEScorer(embedding_dim=channels)
        self.component_attention = COMPONENT_ATTENTIONS.get(component_attention)(
            num_components=num_components, channels=channels, num_relations=num_relations)
        self.bias = nn.Parameter(torch.empty(num_entities))
        self.mi = (MI_ESTIMATORS.get(mi_estimator)(num_components=num_components,
                                                  channels=channels)
                   if mi_estimator is not None else None)
        self.mi_weight, self.auxiliary_lr, self.mi_recompute = mi_weight, mi_lr, mi_recompute
        #: entity-sharded: this shard's edges and the rows they need from the others
        self.halo: Halo | None = None
        self.names = dict(composition=composition, edge_attention=edge_attention,
                          component_attention=component_attention, mi=mi_estimator)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.init_embed)
        nn.init.xavier_normal_(self.init_rel)
        bound = 1.0 / self.proj.out_features ** 0.5  # as the authors' SparseInputLinear
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.uniform_(self.proj.bias, -bound, bound)
        for layer in self.layers:
            layer.reset_parameters()
        if self._own_rel_weight is not None:
            nn.init.xavier_normal_(self._own_rel_weight)
        self.scorer.reset_parameters()
        self.component_attention.reset_parameters()
        nn.init.zeros_(self.bias)
        if self.mi is not None:
            self.mi.reset_parameters()

    @property
    def rel_weight(self) -> Tensor:
        return self.layers[-1].rel_weight if len(self.layers) else self._own_rel_weight

    # ------------------------------------------------------------------ sharding
    def shard_entities(self, shard, *, halo_recompute: bool = True) -> None:
        """Keeps ``shard``'s rows of the base embeddings and the bias and the edges that
        end at its entities (a collective call: builds the :class:`~disenkg.utils.halo.Halo`
        exchange, which with ``halo_recompute`` exchanges the halo rows again in backward
        rather than holding them); the encoder computes this shard's rows and this rank
        scores its entities only."""
        self._shard_rows(self.sharded_parameters(), shard)
        self.halo = Halo.build(shard, self.message_index, self.edge_type,
                               recompute=halo_recompute)
        # the whole graph's edges are no longer needed here: the local ones replace them
        self.message_index, self.edge_type = self.halo.edge_index, self.halo.edge_type

    def _apply(self, fn, recurse=True):  # .to(device) moves the halo's index tensors too
        out = super()._apply(fn, recurse)
        if self.halo is not None:
            self.halo = self.halo.to(self.message_index.device)
            self.message_index, self.edge_type = self.halo.edge_index, self.halo.edge_type
        return out

    def sharded_parameters(self) -> tuple[str, ...]:
        return ("init_embed", "bias")

    def entity_loads(self) -> Tensor:
        """The edges each entity receives, plus its self loop."""
        if self.entity_shard is not None:
            raise RuntimeError("entity_loads needs the whole graph: call it before sharding")
        return torch.bincount(self.message_index[1], minlength=self.num_entities) + 1

    # ------------------------------------------------------------------ encoder
    def encode(self, return_attention: bool = False):
        """Runs the encoder over the whole graph once (entity-sharded: over this shard's
        receivers); returns :class:`DisenKGATReps`."""
        K, F = self.num_components, self.channels
        shard = self.entity_shard
        with self._shard_dropout():
            z = self.proj(self.init_embed).view(-1, K, F)
            # sharded, the first layer's table holds tanh(z) once (Halo.extend)
            x = torch.tanh(z) if shard is None or not len(self.layers) else z
            r = self.init_rel
            attention = []
            for i, layer in enumerate(self.layers):
                with (nullcontext(x) if shard is None
                      else self.halo.extended(x, tanh=i == 0)) as src:
                    out = layer(src, r, self.message_index, self.edge_type,
                                return_attention=return_attention, shard=shard)
                x, r = out[0], out[1]
                if return_attention:
                    attention.append(out[2])
                x = self.encoder_drop(x)
            if not len(self.layers):
                x = self.encoder_drop(x)
        # As in the authors' code, the decoder uses the initial relation embeddings.
        reps = DisenKGATReps(entity=x, relation=self.init_rel)
        return (reps, attention) if return_attention else reps

    @contextmanager
    def _shard_dropout(self) -> Iterator[None]:
        """Entity-sharded and training: the encoder's dropout from this shard's own stream
        (seeded from one draw of the caller's stream, which every shard of a batch slice
        makes alike, plus the shard), so that the shards mask different rows and the
        caller's stream continues identically on all of them."""
        shard = self.entity_shard
        rates = [self.encoder_drop.p] + [layer.att_drop.p for layer in self.layers]
        if shard is None or not self.training or not any(rates):
            yield  # (no draw without dropout: the caller's stream stays one process's)
            return
        seed = int(torch.randint(0, 2**62, (1,)))
        device = self.init_embed.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed((seed + 0x9E3779B97F4A7C15 * (shard.rank + 1)) % 2**63)
            yield

    # ------------------------------------------------------------------ decoder
    def _subjects(self, reps: DisenKGATReps, heads: Tensor) -> Tensor:
        """The encoder rows of ``heads`` (entity-sharded: from their owners, on every
        shard)."""
        shard = self.entity_shard
        return (reps.entity.index_select(0, heads) if shard is None
                else shard.lookup(reps.entity, heads))

    def _parts(self, reps: DisenKGATReps, heads: Tensor, rels: Tensor):
        sub = self._subjects(reps, heads)
        rel = reps.relation.index_select(0, rels).unsqueeze(1).expand_as(sub)
        att = self.component_attention(sub, rel, self.rel_weight.index_select(0, rels), rels)
        return sub, rel, att

    def query(self, reps: DisenKGATReps, heads: Tensor, rels: Tensor) -> tuple[Tensor, Tensor]:
        sub, rel, att = self._parts(reps, heads, rels)
        return self.scorer.query(sub, rel), att

    def candidates(self, reps: DisenKGATReps) -> tuple[Tensor, Tensor | None]:
        return (self.scorer.candidates(reps.entity),
                self.bias if self.scorer.uses_bias else None)

    def loss(self, reps, heads, rels, target, *, label_smoothing: float = 0.0,
             impl: str = "auto", precision: str = "fp32",
             total_queries: int | None = None) -> Tensor:
        if self.scorer.dot_product:
            return super().loss(reps, heads, rels, target, label_smoothing=label_smoothing,
                                impl=impl, precision=precision, total_queries=total_queries)
        sub, rel, att = self._parts(reps, heads, rels)
        x = self._eager_logits(sub, rel, reps)
        target, total = self._shard_loss_args(target)
        return mixture_loss_from_logits(x, att, target, label_smoothing=label_smoothing,
                                        order=self.order, total_entities=total,
                                        total_queries=total_queries)

    def score(self, reps, heads, rels) -> Tensor:
        if self.scorer.dot_product:
            return super().score(reps, heads, rels)
        sub, rel, att = self._parts(reps, heads, rels)
        return mixture_scores_from_logits(self._eager_logits(sub, rel, reps), att, self.order)

    def score_tiles(self, reps, heads, rels, *, tile: int):
        if self.scorer.dot_product:
            yield from super().score_tiles(reps, heads, rels, tile=tile)
            return
        sub, rel, att = self._parts(reps, heads, rels)
        ent = reps.entity
        for lo in range(0, ent.shape[0], tile):
            x = self.scorer.logits(sub, rel, ent[lo:lo + tile])
            if self.scorer.uses_bias:
                x = x + self.bias[lo:lo + tile]
            yield lo, mixture_scores_from_logits(x, att, self.order)

    def _eager_logits(self, sub, rel, reps) -> Tensor:
        x = self.scorer.logits(sub, rel, reps.entity)
        return x + self.bias if self.scorer.uses_bias else x

    # ------------------------------------------------------------------ MI
    def regularization(self, reps: DisenKGATReps, heads: Tensor) -> Tensor | None:
        """``mi_weight`` times the dependence penalty of the batch's query entities."""
        if self.mi is None or self.mi_weight == 0:
            return None
        return self.mi_weight * self.mi(self._subjects(reps, heads))

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the second optimiser (the CLUB estimators)."""
        return list(self.mi.parameters()) if self.mi is not None and self.mi.learns else []

    @property
    def auxiliary_reads_reps(self) -> bool:
        return not self.mi_recompute

    def auxiliary_loss(self, reps: DisenKGATReps | None, heads: Tensor) -> Tensor:
        """Negative log-likelihood of the CLUB estimators on detached embeddings (of a
        fresh encoder pass with ``mi_recompute``: ``reps`` is not read)."""
        if self.mi_recompute:
            with torch.no_grad():
                z = self._subjects(self.encode(), heads)
        else:
            z = self._subjects(reps, heads).detach()
        return self.mi.learning_loss(z)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(entities={self.num_entities}, relations="
                f"{self.num_relations}, K={self.num_components}, F={self.channels}, "
                f"layers={len(self.layers)}, scorer={self.scorer}, order={self.order!r}, "
                + ", ".join(f"{k}={v!r}" for k, v in self.names.items()) + ")")
