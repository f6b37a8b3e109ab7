r"""Relation-weighted edge products without ``(E, K, F)`` tensors.

For a graph of edges :math:`e = (j \to i)` with relation :math:`r_e`, node tensors
:math:`x \in \mathbb R^{N \times K \times F}`, a relation table
:math:`T \in \mathbb R^{R \times K \times F}` and edge weights :math:`w \in \mathbb R^{E \times K}`:

.. math::
    \mathrm{edge\_dot}(x, T)_{e,k} = \sum_f x_{i,k,f}\, x_{j,k,f}\, T_{r_e,k,f}
    \qquad
    \mathrm{edge\_aggregate}(x, T, w)_{i,k,:} = \sum_{e = (j \to i)} w_{e,k}\,
        x_{j,k,:} \odot T_{r_e,k,:}

The receivers may be a prefix of the nodes (``num_receivers`` of :meth:`EdgeGraph.build`:
every ``dst`` lies in ``[0, N_dst)``, ``N_dst <= N``): ``edge_aggregate`` then returns
``(N_dst, K, F)`` rows, while ``x`` keeps all ``N`` rows as senders (an entity shard's own
rows followed by its halo, :mod:`disenkg.utils.halo`).

These are the attention logits (``dot_weight``: :math:`T = W^2`, ``dot_emb``:
:math:`T = r^2`) and the aggregation of ``mult`` / ``cross`` messages
(:math:`T = u_r`) of :class:`~disenkg.nn.conv.DisenConv`. Their gradients are the same
three primitives (an SDDMM over edges, an SpMM over one side's CSR, and a per-relation
reduction, which the native kernels fuse into the SpMM pass that gathers the same rows):

.. math::
    \partial x_{i} \mathrel{+}= \sum_{e \to i} g_{e}\, x_j \odot T_r,\quad
    \partial x_{j} \mathrel{+}= \sum_{e \leftarrow j} g_{e}\, x_i \odot T_r,\quad
    \partial T_r = \sum_{e \in r} g_e\, x_i \odot x_j \qquad(\mathrm{edge\_dot})

    \partial w_{e} = \langle g_i, x_j \odot T_r\rangle,\quad
    \partial x_j \mathrel{+}= \sum_{e \leftarrow j} w_e\, g_i \odot T_r,\quad
    \partial T_r = \sum_{e \in r} w_e\, g_i \odot x_j \qquad(\mathrm{edge\_aggregate})

:func:`edge_attend` composes the two as an attention layer does (logits, a per-edge map to
weights, aggregation), so that its backward sums every sender-side gradient into one
node-sized buffer (the native kernels add in place) instead of one per product.

``impl="native"`` runs the C/OpenMP kernels of :mod:`disenkg.ops.native` (CPU, float32 /
float64; an edge weight of exactly 0 is skipped, so ``0 * inf`` terms count as 0);
``impl="triton"`` runs the Triton kernels of :mod:`disenkg.ops.edge_triton` (CUDA; float32 /
float64; deterministic: no float atomics); ``impl="eager"`` is the plain gather / scatter
reference (it materialises the ``(E, K, F)`` products); ``"auto"`` picks native on CPU
tensors, triton on CUDA tensors.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from disenkg.ops import native
from disenkg.ops.impls import check_impl

__all__ = ["IMPLS", "EdgeGraph", "edge_aggregate", "edge_attend", "edge_dot",
           "native_supported", "triton_supported"]


@dataclass(frozen=True)
class EdgeGraph:
    """Edges ``src -> dst`` with relation ``rel`` plus both CSR orders (built once);
    ``num_nodes`` senders, of which the first ``num_receivers`` may receive."""

    src: Tensor
    dst: Tensor
    rel: Tensor
    num_nodes: int
    num_relations: int
    num_receivers: int
    dst_ptr: Tensor  # (N_dst + 1,) edges order_dst[dst_ptr[i]:dst_ptr[i+1]] end at i
    dst_order: Tensor
    src_ptr: Tensor
    src_order: Tensor
    dst_other: Tensor  # int32, in dst_order: each edge's src (the native kernels' reads)
    dst_rel: Tensor  # int32, in dst_order: each edge's relation
    src_other: Tensor  # the same in src_order: each edge's dst
    src_rel: Tensor
    rel_ptr: Tensor  # (R + 1,) the same for relations (the GPU kernels' table gradient)
    rel_order: Tensor

    @classmethod
    def build(cls, edge_index: Tensor, edge_type: Tensor, num_nodes: int,
              num_relations: int, num_receivers: int | None = None) -> EdgeGraph:
        """``edge_index`` ``(2, E)`` (row 0 source, row 1 target), ``edge_type`` ``(E,)``;
        targets lie in ``[0, num_receivers)`` (default: ``num_nodes``)."""
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_type.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_type must have shape ({edge_index.shape[1]},), got "
                             f"{tuple(edge_type.shape)}")
        receivers = num_nodes if num_receivers is None else num_receivers
        if not 0 <= receivers <= num_nodes:
            raise ValueError(f"num_receivers must lie in [0, {num_nodes}], got {receivers}")
        src, dst = (t.contiguous().long() for t in edge_index)
        rel = edge_type.contiguous().long()
        if src.numel():
            for name, t, hi in (("edge_index[0]", src, num_nodes),
                                ("edge_index[1]", dst, receivers),
                                ("edge_type", rel, num_relations)):
                lo_v, hi_v = int(t.min()), int(t.max())
                if lo_v < 0 or hi_v >= hi:
                    raise ValueError(f"{name} values must lie in [0, {hi}), got "
                                     f"[{lo_v}, {hi_v}]")

        def csr(key: Tensor, size: int) -> tuple[Tensor, Tensor]:
            order = torch.argsort(key, stable=True)
            counts = torch.bincount(key, minlength=size)
            ptr = torch.zeros(size + 1, dtype=torch.long, device=key.device)
            torch.cumsum(counts, 0, out=ptr[1:])
            return ptr, order

        if max(num_nodes, num_relations) > _INT32_MAX:
            raise ValueError(f"at most {_INT32_MAX} nodes and relations per graph, got "
                             f"{num_nodes} nodes and {num_relations} relations")
        dst_ptr, dst_order = csr(dst, receivers)
        src_ptr, src_order = csr(src, num_nodes)
        rel_ptr, rel_order = csr(rel, num_relations)

        def in_order(t: Tensor, order: Tensor) -> Tensor:
            return t.index_select(0, order).to(torch.int32)

        return cls(src, dst, rel, num_nodes, num_relations, receivers, dst_ptr, dst_order,
                   src_ptr, src_order, in_order(src, dst_order), in_order(rel, dst_order),
                   in_order(dst, src_order), in_order(rel, src_order), rel_ptr, rel_order)

    @property
    def num_edges(self) -> int:
        return self.src.numel()


_INT32_MAX = 2**31 - 1


def _native_inputs(tensors: tuple[Tensor, ...]) -> Tensor | None:
    """The first tensor the kernels cannot take (not CPU float32/64), else ``None``."""
    return next((t for t in tensors if t.device.type != "cpu"
                 or t.dtype not in (torch.float32, torch.float64)), None)


def native_supported(*tensors: Tensor) -> bool:
    """Whether the native kernels can run on these tensors (CPU, float32/64, built)."""
    return _native_inputs(tensors) is None and native.available()


# ---------------------------------------------------------------------- native calls
def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


_fn = native.kernel


def _sddmm(a: Tensor, b: Tensor, table: Tensor | None, g: EdgeGraph) -> Tensor:
    _, K, F = a.shape
    out = a.new_empty(g.num_edges, K)
    _fn("edge_sddmm", a.dtype)(a.data_ptr(), b.data_ptr(), _ptr(table), g.dst_ptr.data_ptr(),
                               g.dst_order.data_ptr(), g.dst_other.data_ptr(),
                               g.dst_rel.data_ptr(), g.num_receivers, K, F, out.data_ptr(),
                               torch.get_num_threads())
    return out


def _spmm(b: Tensor, table: Tensor | None, w: Tensor, g: EdgeGraph, to_dst: bool,
          rel_a: Tensor | None = None, into: Tensor | None = None
          ) -> tuple[Tensor, Tensor | None]:
    r"""The SpMM onto one side; with ``rel_a`` also, from the same pass, the per-relation
    reduction :math:`\sum_{e \in r} w_e\, a_{n(e)} \odot b_{other(e)}` (``n(e)`` the
    edge's endpoint on that side); with ``into`` (contiguous, that side's rows) the rows
    are added to it in place."""
    _, K, F = b.shape
    rows = g.num_receivers if to_dst else g.num_nodes
    out = b.new_empty(rows, K, F) if into is None else into
    red = None if rel_a is None else b.new_empty(g.num_relations, K, F)
    ptr, order, other, rel = ((g.dst_ptr, g.dst_order, g.dst_other, g.dst_rel) if to_dst
                              else (g.src_ptr, g.src_order, g.src_other, g.src_rel))
    _fn("edge_spmm", b.dtype)(b.data_ptr(), _ptr(table), w.data_ptr(), ptr.data_ptr(),
                              order.data_ptr(), other.data_ptr(), rel.data_ptr(),
                              rows, K, F, out.data_ptr(), _ptr(rel_a),
                              g.num_relations, _ptr(red), int(into is not None),
                              torch.get_num_threads())
    return out, red


def _sddmm_on(backend: str, a: Tensor, b: Tensor, table: Tensor | None,
              g: EdgeGraph) -> Tensor:
    if backend == "triton":
        from disenkg.ops import edge_triton

        return edge_triton.sddmm(a, b, table, g.src, g.dst, g.rel)
    return _sddmm(a, b, table, g)


def _spmm_on(backend: str, b: Tensor, table: Tensor | None, w: Tensor, g: EdgeGraph,
             to_dst: bool, rel_a: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    if backend != "triton":
        return _spmm(b, table, w, g, to_dst, rel_a)
    from disenkg.ops import edge_triton

    ptr, order, other, node = ((g.dst_ptr, g.dst_order, g.src, g.dst) if to_dst
                               else (g.src_ptr, g.src_order, g.dst, g.src))
    out = edge_triton.spmm(b, table, w, ptr, order, other, g.rel,
                           g.num_receivers if to_dst else g.num_nodes)
    red = None if rel_a is None else edge_triton.relation_sum(
        rel_a, b, w, g.rel_ptr, g.rel_order, node, other, g.rel, g.num_relations)
    return out, red


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, graph, backend):
        ctx.save_for_backward(x, table)
        ctx.graph, ctx.backend = graph, backend
        return _sddmm_on(backend, x, x, table, graph)

    @staticmethod
    def backward(ctx, grad):
        x, table = ctx.saved_tensors
        g: EdgeGraph = ctx.graph
        grad = grad.contiguous()
        want_t = ctx.needs_input_grad[1]
        # the dst-side pass gathers x_src for both d x_dst and d T = sum g x_dst * x_src
        gx = _spmm_on(ctx.backend, x, table, grad, g, to_dst=False)[0]
        if ctx.backend == "native":  # the receivers' rows added in place: no second buffer
            gt = _spmm(x, table, grad, g, to_dst=True, rel_a=x if want_t else None,
                       into=gx[:g.num_receivers])[1]
        else:
            g_dst, gt = _spmm_on(ctx.backend, x, table, grad, g, to_dst=True,
                                 rel_a=x if want_t else None)
            gx[:g.num_receivers].add_(g_dst)
        return gx if ctx.needs_input_grad[0] else None, gt, None, None


class _EdgeAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, weight, graph, backend):
        ctx.save_for_backward(x, table, weight)
        ctx.graph, ctx.backend = graph, backend
        return _spmm_on(backend, x, table, weight, graph, to_dst=True)[0]

    @staticmethod
    def backward(ctx, grad):
        x, table, weight = ctx.saved_tensors
        g: EdgeGraph = ctx.graph
        grad = grad.contiguous()
        gx = gt = gw = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # the src-side pass gathers grad_dst for both d x_src and
            # d T = sum w grad_dst * x_src
            gx, gt = _spmm_on(ctx.backend, grad, table, weight, g, to_dst=False,
                              rel_a=x if ctx.needs_input_grad[1] else None)
            gx = gx if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[2]:
            gw = _sddmm_on(ctx.backend, grad, x, table, g)
        return gx, gt, gw, None, None


class _EdgeAttend(torch.autograd.Function):
    """``edge_aggregate(x, T_agg, weights(edge_dot(x, T_dot)))`` with one gradient buffer
    for ``x``; ``weights`` (the per-edge map) runs under autograd on its own small graph."""

    @staticmethod
    def forward(ctx, x, t_dot, t_agg, graph, backend, weights, track):
        logits = _sddmm_on(backend, x, x, t_dot, graph)
        with torch.set_grad_enabled(track):  # the weights' own graph, for backward only
            raw = logits.requires_grad_(track)
            alpha, w = weights(raw)
        out = _spmm_on(backend, x, t_agg, w.detach(), graph, to_dst=True)[0]
        ctx.save_for_backward(x, t_dot, t_agg)
        ctx.graph, ctx.backend, ctx.inner = graph, backend, (raw, w)
        alpha = alpha.detach()
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    def backward(ctx, grad, _):
        x, t_dot, t_agg = ctx.saved_tensors
        g: EdgeGraph = ctx.graph
        raw, w = ctx.inner
        grad = grad.contiguous()
        # aggregation: senders' gradient (the buffer) and its table's, then the weights'
        gx, gt_agg = _spmm_on(ctx.backend, grad, t_agg, w.detach(), g, to_dst=False, rel_a=x)
        gw = _sddmm_on(ctx.backend, grad, x, t_agg, g)
        (gl,) = torch.autograd.grad(w, raw, gw)
        gl = gl.contiguous()
        ctx.inner = None
        # logits: both sides of every edge, added into the same buffer
        if ctx.backend == "native":
            _spmm(x, t_dot, gl, g, to_dst=False, into=gx)
            gt_dot = _spmm(x, t_dot, gl, g, to_dst=True, rel_a=x, into=gx[:g.num_receivers])[1]
        else:
            gx.add_(_spmm_on(ctx.backend, x, t_dot, gl, g, to_dst=False)[0])
            g_dst, gt_dot = _spmm_on(ctx.backend, x, t_dot, gl, g, to_dst=True, rel_a=x)
            gx[:g.num_receivers].add_(g_dst)
        return gx, gt_dot, gt_agg, None, None, None, None


# ---------------------------------------------------------------------- public ops
def _check(x: Tensor, table: Tensor, graph: EdgeGraph, weight: Tensor | None = None) -> None:
    if x.dim() != 3 or x.shape[0] != graph.num_nodes:
        raise ValueError(f"x must have shape ({graph.num_nodes}, K, F), got {tuple(x.shape)}")
    expected = (graph.num_relations, *x.shape[1:])
    if table.shape != expected:
        raise ValueError(f"table must have shape {expected}, got {tuple(table.shape)}")
    if weight is not None and weight.shape != (graph.num_edges, x.shape[1]):
        raise ValueError(f"weight must have shape ({graph.num_edges}, {x.shape[1]}), got "
                         f"{tuple(weight.shape)}")
    if len({t.dtype for t in (x, table) + ((weight,) if weight is not None else ())}) != 1:
        raise TypeError("x, table and weight must share one dtype")


#: the edge products' ``impl`` choices (:mod:`disenkg.ops.impls`)
IMPLS = ("auto", "native", "triton", "eager")


def triton_supported(*tensors: Tensor) -> bool:
    """Whether the Triton kernels can run on these tensors: float32/64 on a CUDA device
    (or on the CPU under ``TRITON_INTERPRET=1``) with ``triton`` installed."""
    if importlib.util.find_spec("triton") is None:
        return False
    where = {t.device.type for t in tensors}
    ok_device = where == {"cuda"} or (where == {"cpu"}
                                      and os.environ.get("TRITON_INTERPRET") == "1")
    return ok_device and all(t.dtype in (torch.float32, torch.float64) for t in tensors)


def _resolve(impl: str, *tensors: Tensor) -> str:
    """``native``, ``triton`` or ``eager`` for ``impl``: ``auto`` = native on CPU tensors
    where built, triton on CUDA tensors, else eager."""
    check_impl(impl, IMPLS)
    if impl == "triton":
        if not triton_supported(*tensors):
            raise ValueError("impl='triton' needs the 'triton' package and float32/float64 "
                             "CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
        return "triton"
    if impl == "auto" and all(t.device.type == "cuda" for t in tensors) \
            and triton_supported(*tensors):
        return "triton"
    bad = _native_inputs(tensors)
    need = ("CPU float32/float64 tensors"
            + ("" if bad is None else f", got {bad.dtype} on {bad.device}"))
    return "native" if native.use(impl, bad is None, need) else "eager"


def edge_dot(x: Tensor, table: Tensor, graph: EdgeGraph, impl: str = "auto") -> Tensor:
    """``(E, K)``: :math:`\\sum_f x_{dst} x_{src} T_{rel}` (see module docstring)."""
    _check(x, table, graph)
    backend = _resolve(impl, x, table)
    if backend != "eager":
        return _EdgeDot.apply(x.contiguous(), table.contiguous(), graph, backend)
    return (x.index_select(0, graph.dst) * x.index_select(0, graph.src)
            * table.index_select(0, graph.rel)).sum(-1)


def edge_aggregate(x: Tensor, table: Tensor, weight: Tensor, graph: EdgeGraph,
                   impl: str = "auto") -> Tensor:
    """``(N_dst, K, F)``: :math:`\\sum_{e \\to i} w_e\\, x_{src} \\odot T_{rel}` (see
    module docstring)."""
    _check(x, table, graph, weight)
    backend = _resolve(impl, x, table, weight)
    if backend != "eager":
        return _EdgeAggregate.apply(x.contiguous(), table.contiguous(), weight.contiguous(),
                                    graph, backend)
    msg = x.index_select(0, graph.src) * table.index_select(0, graph.rel)
    out = x.new_zeros(graph.num_receivers, *x.shape[1:])
    return out.index_add_(0, graph.dst, msg * weight.unsqueeze(-1))


def edge_attend(x: Tensor, dot_table: Tensor, agg_table: Tensor, graph: EdgeGraph,
                weights, impl: str = "auto") -> tuple[Tensor, Tensor]:
    r"""An attention layer's edge work: :math:`\ell = \mathrm{edge\_dot}(x, T_{dot})`,
    ``alpha, w = weights(l)`` (a per-edge map, e.g. LeakyReLU, the softmax over each
    receiver's edges and dropout, run under autograd) and
    :math:`\mathrm{edge\_aggregate}(x, T_{agg}, w)`; returns the aggregate
    ``(N_dst, K, F)`` and ``alpha`` ``(E, K)`` (detached). Equal to the three calls, with
    one ``(N, K, F)`` gradient buffer for ``x`` in backward instead of two (``native`` /
    ``triton``; ``eager`` is the three calls)."""
    _check(x, dot_table, graph)
    _check(x, agg_table, graph)
    backend = _resolve(impl, x, dot_table, agg_table)
    if backend != "eager":
        track = torch.is_grad_enabled() and any(
            t.requires_grad for t in (x, dot_table, agg_table))
        return _EdgeAttend.apply(x.contiguous(), dot_table.contiguous(),
                                 agg_table.contiguous(), graph, backend, weights, track)
    alpha, w = weights(edge_dot(x, dot_table, graph, impl="eager"))
    return edge_aggregate(x, agg_table, w, graph, impl="eager"), alpha.detach()
