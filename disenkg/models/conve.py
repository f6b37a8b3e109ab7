r"""ConvE link predictor with 1-N scoring (Dettmers et al., AAAI 2018).

.. math::
    \psi(h, r, t) = \langle \mathrm{ConvE}(e_h, r_r), e_t\rangle + b_t

trained with BCE + label smoothing against all entities. It is the ``K = 1`` case of the
mixture models (:class:`~disenkg.models.base.MixtureLinkModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from disenkg.models.base import MixtureLinkModel
from disenkg.nn.scorers import ConvEInteraction

__all__ = ["ConvE", "ConvEReps"]


@dataclass
class ConvEReps:
    entity: Tensor  # (N, D)
    relation: Tensor  # (2R, D)
    #: evaluation: the head's relation-only part per relation (ConvEInteraction.relation_part)
    relation_part: Tensor | None = None  # (2R, D)


class ConvE(MixtureLinkModel):
    """ConvE.

    Args:
        num_entities (int): N.
        num_relations (int): R base relations (inverses ``r + R`` get their own rows).
        embedding_dim (int): D. (default: ``200``)
        k_h (int): image height; ``k_w``, ``num_filters``, ``kernel_size``, the dropouts,
            ``image_chunk`` and ``precision`` likewise as
            :class:`~disenkg.nn.scorers.ConvEInteraction` takes them.
        head_impl (str): the interaction's ``impl`` (:mod:`disenkg.ops.impls`).
            (default: ``"auto"``)

    Shapes:
        ``query``: ``(B, 1, D)``, ``candidates``: ``(N, 1, D)`` and bias ``(N,)``.
    """

    def __init__(self, *, num_entities: int, num_relations: int, embedding_dim: int = 200,
                 k_h: int = 20, k_w: int = 10, num_filters: int = 32, kernel_size: int = 3,
                 input_dropout: float = 0.2, feature_dropout: float = 0.2,
                 hidden_dropout: float = 0.3, image_chunk: int = 256,
                 head_impl: str = "auto", precision: str = "fp32") -> None:
        super().__init__()
        self.num_entities, self.num_relations = num_entities, num_relations
        self.entity = nn.Embedding(num_entities, embedding_dim)
        self.relation = nn.Embedding(2 * num_relations, embedding_dim)
        self.bias = nn.Parameter(Tensor(num_entities))
        self.interaction = ConvEInteraction(
            embedding_dim=embedding_dim, k_h=k_h, k_w=k_w, num_filters=num_filters,
            kernel_size=kernel_size, input_dropout=input_dropout,
            feature_dropout=feature_dropout, hidden_dropout=hidden_dropout,
            image_chunk=image_chunk, impl=head_impl, precision=precision)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.entity.weight)
        nn.init.xavier_normal_(self.relation.weight)
        nn.init.zeros_(self.bias)
        self.interaction.reset_parameters()

    def shard_entities(self, shard, *, halo_recompute: bool = True) -> None:
        """Keeps ``shard``'s rows of the entity table and the bias; the query's subject
        rows are looked up across ranks (:meth:`EntityShard.lookup
        <disenkg.utils.entity_shards.EntityShard.lookup>`)."""
        self._shard_rows(self.sharded_parameters(), shard)

    def sharded_parameters(self) -> tuple[str, ...]:
        return ("entity.weight", "bias")

    def encode(self) -> ConvEReps:
        """The tables; in evaluation also the head's relation-only part of every relation
        (computed once per evaluation, shared by all its queries)."""
        rel = self.relation.weight
        return ConvEReps(self.entity.weight, rel, self.interaction.relation_part(rel))

    def query(self, reps: ConvEReps, heads: Tensor, rels: Tensor) -> tuple[Tensor, Tensor]:
        # a sparse gradient for the B looked-up rows: autograd sums it with the scoring's
        # dense (N, D) gradient into one new table-sized buffer, where index_select's
        # backward would first fill a dense table-sized gradient of its own (one buffer
        # more: 400 MB for 500 000 x 200). Not in place: autograd's gradient buffer
        # treats a sparse gradient like a tensor subclass and adds dense + sparse into
        # a new tensor.
        sub = (nn.functional.embedding(heads, reps.entity, sparse=True)
               if self.entity_shard is None else self.entity_shard.lookup(reps.entity, heads))
        part = (None if reps.relation_part is None
                else reps.relation_part.index_select(0, rels))
        q = self.interaction(sub, reps.relation.index_select(0, rels), relation_part=part)
        return q.unsqueeze(1), q.new_zeros(q.shape[0], 1)

    def candidates(self, reps: ConvEReps) -> tuple[Tensor, Tensor]:
        return reps.entity.unsqueeze(1), self.bias

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(entities={self.num_entities}, "
                f"relations={self.num_relations}, {self.interaction})")
