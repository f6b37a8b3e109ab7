r"""Disentangled relation-aware graph attention layer (DisenKGAT, Wu et al., CIKM 2021,
https://arxiv.org/abs/2106.02758).

For every node :math:`i`, component :math:`k`, with incoming edges :math:`j \to i` of
relation :math:`r` plus a self loop with its own relation:

.. math::
    m_{ji,k} = \phi(x_{j,k}, r, W_{r,k}), \qquad
    \alpha_{ji,k} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        \big(\mathrm{LeakyReLU}(s(x_{i,k}, x_{j,k}, r, W_{r,k}))\big)

.. math::
    x'_{i} = \mathrm{act}\Big(\mathrm{BN}\big(\textstyle\sum_{j} \mathrm{drop}(\alpha_{ji,k})\,
        m_{ji,k}\big)\Big), \qquad r' = r\,W_{rel}

with the composition :math:`\phi` from :data:`~disenkg.nn.composition.COMPOSITIONS` and the
attention score :math:`s` from :data:`~disenkg.nn.edge_attention.EDGE_ATTENTIONS`.

Memory: only the attention logits are ``(E, K)``; messages are ``(E, K, F)``.
Implementations (:mod:`disenkg.ops.impls`):

* ``impl="native"`` (the fused schedule): for ``mult`` / ``cross`` messages
  (:math:`x_j \odot u_r`) with ``dot_weight`` / ``dot_emb`` logits
  (:math:`\langle x_i, x_j \odot T_r\rangle`, with :math:`T = W^2` or :math:`r^2`),
  logits and aggregation are the relation-weighted edge products of
  :mod:`disenkg.ops.edge_products` (native CPU kernels): no ``(E, K, F)`` tensor exists in
  forward or backward, and nothing is recomputed;
* ``impl="triton"``: the same fused schedule with the Triton kernels of
  :mod:`disenkg.ops.edge_triton` (CUDA);
* ``impl="chunked"``: edges are processed in chunks whose activations are recomputed in
  backward (activation checkpointing), so no ``(E, K, F)`` tensor is ever alive;
* ``impl="eager"``: the same code on all edges at once (the materialising reference);
* ``impl="auto"`` (default): the fused schedule where it applies (``native`` on a CPU with
  the kernels built, ``triton`` on CUDA), else ``chunked``.

Partitioned by receiver (``shard=``, an entity shard of a ``torch.distributed`` job): ``x``
holds the shard's own rows followed by its halo (:class:`~disenkg.utils.halo.Halo`), the
edges end at the own rows, self loops are added for them only, the output has the own rows
only, and the batch norm's statistics are those of all shards' rows together
(:func:`~disenkg.ops.sync_batch_norm.batch_norm_over`): the rows equal one process's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from disenkg.nn.composition import COMPOSITIONS, RELATION_FACTORS
from disenkg.nn.dropout import Dropout
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.ops import native
from disenkg.ops.edge_products import (
    EdgeGraph,
    edge_attend,
    native_supported,
    triton_supported,
)
from disenkg.ops.impls import OP_IMPLS, check_impl
from disenkg.ops.sync_batch_norm import batch_norm_over
from disenkg.utils.entity_shards import EntityShard

__all__ = ["FUSED_ATTENTIONS", "IMPLS", "DisenConv"]

#: the layer's ``impl`` choices (:mod:`disenkg.ops.impls`)
IMPLS = OP_IMPLS["disen_conv"]
#: edge attentions of the form <x_i, x_j * T_r> (the fused schedule's logits)
FUSED_ATTENTIONS = ("dot_weight", "dot_emb")


class DisenConv(MessagePassing):
    r"""The DisenKGAT layer (see module docstring for the math).

    Args:
        num_entities (int): N (for the self loops).
        num_relations (int): R base relations; edge types lie in ``[0, 2R)``, the self
            loop uses type ``2R``.
        num_components (int): K. (default: ``3``)
        channels (int): F per component (input = output). (default: ``200``)
        composition (str): ``sub``, ``mult``, ``cross`` or ``corr``. (default: ``"cross"``)
        attention (str): ``dot_weight``, ``dot_emb``, ``cat_weight``, ``cat_emb`` or
            ``learn``. (default: ``"dot_weight"``)
        attention_dropout (float): dropout on the normalised attention. (default: ``0.4``)
        negative_slope (float): LeakyReLU slope of the logits. (default: ``0.2``)
        bias (bool): add a learned bias before batch norm. (default: ``False``)
        activation (str): ``tanh`` or ``none``. (default: ``"tanh"``)
        impl (str): ``auto``, ``native`` / ``triton`` (fused edge products on a CPU / GPU),
            ``chunked`` or ``eager`` (see the module docstring). (default: ``"auto"``)
        edge_chunk (int, optional): edges per chunk; default from a 256 MB budget.

    Shapes:
        x ``(N, K, F)``, rel ``(2R, F)``, edge_index ``(2, E)`` (row 0 = source j,
        row 1 = target i), edge_type ``(E,)`` -> ``(N, K, F)``, ``(2R, F)``
        and, with ``return_attention=True``, ``(E + N, K)`` weights of the edges with self
        loops appended. With ``shard``: x ``(n + H, K, F)`` (own rows, then the halo),
        targets in ``[0, n)``, output ``(n, K, F)`` and ``(E + n, K)``,
        ``n = shard.size``.
    """

    def __init__(self, *, num_entities: int, num_relations: int, num_components: int = 3,
                 channels: int = 200, composition: str = "cross",
                 attention: str = "dot_weight", attention_dropout: float = 0.4,
                 negative_slope: float = 0.2, bias: bool = False, activation: str = "tanh",
                 impl: str = "auto", edge_chunk: int | None = None) -> None:
        super().__init__(aggr="add", node_dim=0)
        check_impl(impl, IMPLS)
        if activation not in ("tanh", "none"):
            raise ValueError(f"unknown activation {activation!r}; choose one of ['none', 'tanh']")
        self.num_entities, self.num_relations = num_entities, num_relations
        self.num_components, self.channels = num_components, channels
        self.composition_name, self.attention_name = composition, attention
        self.compose = COMPOSITIONS.get(composition)
        self.relation_factor = RELATION_FACTORS.get(composition)
        self.attention = EDGE_ATTENTIONS.get(attention)(num_components=num_components,
                                                        channels=channels)
        self.att_drop = Dropout(attention_dropout)
        self.negative_slope = negative_slope
        self.activation = activation
        if impl in ("native", "triton") and not self.fusable:
            raise ValueError(f"impl={impl!r} (the fused schedule) needs composition in "
                             f"{sorted(RELATION_FACTORS)} and attention in "
                             f"{list(FUSED_ATTENTIONS)}, got "
                             f"{composition!r} and {attention!r}")
        self.impl = impl
        self._graph_cache: tuple[Tensor, Tensor, tuple, EdgeGraph] | None = None
        self.edge_chunk = edge_chunk or max(1024, (256 * 2**20) // (8 * num_components
                                                                  * channels * 4))
        self.rel_weight = nn.Parameter(torch.empty(2 * num_relations + 1, num_components,
                                                   channels))
        self.loop_rel = nn.Parameter(torch.empty(1, channels))
        self.w_rel = nn.Parameter(torch.empty(channels, channels))
        self.bias = nn.Parameter(torch.empty(num_components * channels)) if bias else None
        self.bn = nn.BatchNorm1d(num_components * channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.rel_weight, self.loop_rel, self.w_rel):
            nn.init.xavier_normal_(p)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.attention.reset_parameters()
        self.bn.reset_parameters()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, rel: Tensor, edge_index: Tensor, edge_type: Tensor,
                return_attention: bool = False, *, shard: EntityShard | None = None):
        N, K, F = x.shape
        n = N if shard is None else shard.size  # the receivers: the first n rows
        if (K, F) != (self.num_components, self.channels):
            raise ValueError(f"x must have shape (N, {self.num_components}, {self.channels}), "
                             f"got {tuple(x.shape)}")
        if rel.shape != (2 * self.num_relations, F):
            raise ValueError(f"rel must have shape ({2 * self.num_relations}, {F}), "
                             f"got {tuple(rel.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or \
                edge_type.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_index must be (2, E) and edge_type (E,), got "
                             f"{tuple(edge_index.shape)} and {tuple(edge_type.shape)}")
        rel_all = torch.cat([rel, self.loop_rel], dim=0)
        # Per-relation tables (tiny) instead of per-edge products where the math allows.
        factor = (self.relation_factor(rel_all.unsqueeze(1), self.rel_weight)
                  if self.relation_factor is not None else None)
        table = self.attention.relation_table(rel_all, self.rel_weight)
        fused = self._fused_backend(x, rel_all)
        if fused is not None:
            graph = self._graph(edge_index, edge_type, N, n)

            def weights(logits: Tensor) -> tuple[Tensor, Tensor]:
                alpha = softmax(nn.functional.leaky_relu(logits, self.negative_slope),
                                graph.dst, num_nodes=n)
                return alpha, self.att_drop(alpha)

            out, alpha = edge_attend(x, table, factor, graph, weights, impl=fused)
            return self._finish(out, rel, alpha, return_attention, shard)
        ei, et = self._with_loops(edge_index, edge_type, n)
        tables = (factor, table)
        logits = self._map_edges(self._edge_logits, ei, et, x, rel_all, tables, n, reduce=False)
        alpha = softmax(logits, ei[1], num_nodes=n)  # over i's incoming edges, per k
        alpha_d = self.att_drop(alpha)
        out = self._map_edges(self._aggregate, ei, et, x, rel_all, tables, n, alpha_d,
                              reduce=True)
        return self._finish(out, rel, alpha, return_attention, shard)

    @property
    def fusable(self) -> bool:
        """Whether the fused schedule applies to this composition and attention."""
        return (self.relation_factor is not None
                and self.attention_name in FUSED_ATTENTIONS)

    def _fused_backend(self, x: Tensor, rel_all: Tensor) -> str | None:
        """The edge products' ``impl`` of the fused schedule, or ``None`` (edge chunks)."""
        if self.impl == "native":
            if not native_supported(x, rel_all):
                raise RuntimeError(f"impl='native' cannot run on {x.dtype} {x.device} tensors "
                                   f"(native kernels: {native.unavailable_reason() or 'ok'})")
            return "native"
        if self.impl == "triton":
            if not triton_supported(x, rel_all):
                raise RuntimeError(f"impl='triton' cannot run on {x.dtype} {x.device} tensors "
                                   "(needs triton and CUDA, or TRITON_INTERPRET=1)")
            return "triton"
        if self.impl == "auto" and self.fusable:
            if native_supported(x, rel_all):
                return "native"
            if x.device.type == "cuda" and triton_supported(x, rel_all):
                return "triton"
        return None

    def _with_loops(self, edge_index: Tensor, edge_type: Tensor, N: int
                    ) -> tuple[Tensor, Tensor]:
        """Appends one self loop per receiver (the first ``N`` nodes), with relation
        ``2R``."""
        loops = torch.arange(N, device=edge_index.device)
        ei = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        et = torch.cat([edge_type, torch.full((N,), 2 * self.num_relations,
                                              dtype=edge_type.dtype, device=edge_type.device)])
        return ei, et

    def _graph(self, edge_index: Tensor, edge_type: Tensor, N: int, n: int) -> EdgeGraph:
        """CSR orders of the edges with self loops (``N`` senders, the first ``n`` of
        which receive), cached for an unchanged graph."""
        # The cache holds the tensors themselves (identity + version), so a new graph can
        # never be mistaken for the cached one.
        key = (edge_index._version, edge_type._version, N, n)
        c = self._graph_cache
        if c is None or c[0] is not edge_index or c[1] is not edge_type or c[2] != key:
            ei, et = self._with_loops(edge_index, edge_type, n)
            self._graph_cache = (edge_index, edge_type, key,
                                 EdgeGraph.build(ei, et, N, 2 * self.num_relations + 1,
                                                 num_receivers=n))
        return self._graph_cache[3]

    def _finish(self, out: Tensor, rel: Tensor, alpha: Tensor, return_attention: bool,
                shard: EntityShard | None):
        """Bias, batch norm (over every shard's rows) and activation of the aggregated
        ``(N, K, F)`` output."""
        N, K, F = out.shape
        out = out.reshape(N, K * F)
        if self.bias is not None:
            out = out + self.bias
        out = (self.bn(out) if shard is None
               else batch_norm_over(self.bn, out, shard.group))
        if self.activation == "tanh":  # in place: batch norm's backward never reads its
            out.tanh_()  # output, so the (N, K F) rows are not held twice at the peak
        out = out.view(N, K, F)
        rel_out = rel @ self.w_rel
        if return_attention:
            return out, rel_out, alpha
        return out, rel_out

    def _map_edges(self, fn, ei, et, x, rel_all, tables, n, *extra, reduce: bool):
        """Applies ``fn`` to edge chunks (checkpointed) and concatenates or sums results
        (``n``: the receivers, the first rows of ``x``).

        ``tables`` (per-relation, not sliced) and ``extra`` (per-edge, sliced) are passed
        explicitly so that the recomputation in backward sees exactly these tensors.
        """
        E = ei.shape[1]
        if self.impl == "eager" or E <= self.edge_chunk:
            return fn(ei, et, x, rel_all, *tables, n, *extra)
        parts = None if reduce else []
        for s in range(0, E, self.edge_chunk):
            sl = slice(s, min(E, s + self.edge_chunk))
            args = (ei[:, sl], et[sl], x, rel_all, *tables, n, *(t[sl] for t in extra))
            res = checkpoint(fn, *args, use_reentrant=False) if torch.is_grad_enabled() \
                else fn(*args)
            if reduce:
                parts = res if parts is None else parts + res
            else:
                parts.append(res)
        return parts if reduce else torch.cat(parts)

    def _edge_logits(self, ei, et, x, rel_all, factor, table, n) -> Tensor:
        return self.edge_updater(ei, x=self._sides(x, n), edge_type=et, rel=rel_all,
                                 factor=factor, table=table)

    def _aggregate(self, ei, et, x, rel_all, factor, table, n, alpha) -> Tensor:
        return self.propagate(ei, x=self._sides(x, n), edge_type=et, rel=rel_all,
                              factor=factor, alpha=alpha, size=(x.shape[0], n))

    @staticmethod
    def _sides(x: Tensor, n: int):
        """PyG's node features: one tensor, or (senders, receivers) when only the first
        ``n`` rows receive."""
        return x if n == x.shape[0] else (x, x[:n])

    def edge_update(self, x_i: Tensor, x_j: Tensor, edge_type: Tensor, rel: Tensor,
                    factor: Tensor | None, table: Tensor | None) -> Tensor:
        if table is not None:  # dot attentions: <x_i, x_j * T_r> from the per-relation table
            logits = (x_i * x_j).mul_(table.index_select(0, edge_type)).sum(-1)
        else:
            # index_select (not []) so that backward is an index_add, not a sorting index_put
            r = rel.index_select(0, edge_type).unsqueeze(1)
            w = self.rel_weight.index_select(0, edge_type)
            msg = (self._compose(x_j, edge_type, rel, factor)
                   if self.attention.needs_message else None)
            logits = self.attention(x_i, x_j, r, w, msg)
        return nn.functional.leaky_relu(logits, self.negative_slope)

    def message(self, x_j: Tensor, edge_type: Tensor, rel: Tensor, factor: Tensor | None,
                alpha: Tensor) -> Tensor:
        return self._compose(x_j, edge_type, rel, factor) * alpha.unsqueeze(-1)

    def _compose(self, x_j: Tensor, edge_type: Tensor, rel: Tensor,
                 factor: Tensor | None) -> Tensor:
        if factor is not None:  # mult / cross: x_j * u_r
            return x_j * factor.index_select(0, edge_type)
        r = rel.index_select(0, edge_type).unsqueeze(1)
        w = self.rel_weight.index_select(0, edge_type)
        return self.compose(x_j, r, w)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(K={self.num_components}, F={self.channels}, "
                f"composition={self.composition_name!r}, attention={self.attention_name!r}, "
                f"impl={self.impl!r})")


