"""Functional and module APIs of the mixture BCE, with implementation dispatch."""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from disenkg.ops.impls import OP_IMPLS, check_impl
from disenkg.ops.mixture_bce.eager import reference_loss
from disenkg.ops.mixture_bce.function import MixtureBCEFunction
from disenkg.ops.mixture_bce.inputs import (
    ORDERS,
    REDUCTIONS,
    check_inputs,
    check_pos_weight,
    make_target,
)
from disenkg.ops.precision import check_precision, triton_bf16, use_bf16

__all__ = ["IMPLS", "MixtureBCELoss", "mixture_bce", "resolve_impl"]

#: ``eager`` materialises the (B, K, N) logits; ``chunked`` / ``native`` run the chunked
#: schedule with the PyTorch / C element tile; ``triton`` the GPU kernels
#: (:mod:`disenkg.ops.impls`)
IMPLS = OP_IMPLS["mixture_bce"]

#: the chunked schedule's element tile per ``impl`` (:data:`disenkg.ops.native.IMPLS`)
_TILES = {"auto": "auto", "chunked": "eager", "native": "native"}


def resolve_impl(impl: str, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> tuple[str, str]:
    """``(backend, tile)``: the backend ``eager``, ``chunked`` or ``triton``, and for the
    chunked one the element tile's ``impl`` (``auto`` = the C tile where the inputs allow
    it). ``auto`` is ``triton`` on CUDA when importable (not for float64 inputs: the
    kernels compute in float32), else the chunked schedule. ``triton`` for float64 inputs
    is a ``ValueError``."""
    check_impl(impl, IMPLS)
    if impl == "triton" and dtype == torch.float64:
        raise ValueError("impl='triton' computes in float32 and cannot take float64 inputs "
                         "exactly; use impl 'chunked' or 'eager' (or float32 inputs)")
    if (impl == "auto" and device.type == "cuda" and dtype != torch.float64
            and importlib.util.find_spec("triton")):
        return "triton", "auto"
    if impl in _TILES:
        return "chunked", _TILES[impl]
    return impl, "auto"


def mixture_bce(
    query: Tensor,
    entity: Tensor,
    att_logits: Tensor,
    target: Tensor | tuple[Tensor, Tensor],
    *,
    bias: Tensor | None = None,
    label_smoothing: float = 0.0,
    order: str = "after",
    reduction: str = "mean",
    impl: str = "auto",
    chunk_budget_bytes: int | None = None,
    precision: str = "fp32",
    pos_weight: float | None = None,
    total_entities: int | None = None,
    total_queries: int | None = None,
) -> Tensor:
    r"""Binary cross-entropy of a K-component mixture scored against all N entities.

    .. math::
        x_{bkn} = \langle q_{bk}, e_{nk}\rangle + \beta_n, \qquad
        a_{b} = \mathrm{softmax}(\theta_{b})

    * ``order="after"`` (mix probabilities): :math:`p_{bn} = \sum_k a_{bk}\sigma(x_{bkn})`,
      :math:`\ell_{bn} = -(t\log p + (1-t)\log(1-p))`, computed in log space as
      :math:`\log p = \mathrm{LSE}_k(\log a_k + \log\sigma(x_k))` and
      :math:`\log(1-p) = \mathrm{LSE}_k(\log a_k + \log\sigma(-x_k))`; no clamping.
    * ``order="before"`` (mix logits): :math:`z_{bn} = \sum_k a_{bk} x_{bkn}`,
      :math:`\ell_{bn} = \mathrm{softplus}(z) - t z` (BCE with logits).

    Label smoothing follows DisenKGAT/CompGCN: :math:`t = (1-\epsilon) y + 1/N` when
    :math:`\epsilon > 0`, else :math:`t = y`. With ``K = 1`` both orders equal
    BCE-with-logits over ``(B, N)``. A positive-class weight :math:`w` (``pos_weight``,
    as in ``BCEWithLogitsLoss``) makes the element loss
    :math:`-(w\,t\log p + (1-t)\log(1-p))`.

    Args:
        query (Tensor): ``(B, K, F)`` per-component query vectors.
        entity (Tensor): ``(N, K, F)`` per-component entity vectors.
        att_logits (Tensor): ``(B, K)`` component attention logits.
        target: dense ``(B, N)`` (float, bool or int, values in [0, 1]) or a pair
            ``(rows, cols)`` of long tensors listing the positive pairs (duplicates count once).
        bias (Tensor, optional): ``(N,)`` per-entity bias. (default: ``None``)
        label_smoothing (float): :math:`\epsilon \in [0, 1)`. (default: ``0.0``)
        order (str): ``"after"`` or ``"before"``. (default: ``"after"``)
        reduction (str): ``"mean"`` over all ``B * N`` elements, ``"sum"`` or ``"none"``
            (returns ``(B, N)``). (default: ``"mean"``)
        impl (str): ``"auto"``, ``"eager"`` (materialises the ``(B, K, N)`` logits; the
            reference), ``"chunked"`` (logit tiles, PyTorch element-wise code),
            ``"native"`` (logit tiles, the C element-wise kernel: float32 CPU inputs, a
            sparse or constant target) or ``"triton"`` (CUDA); see
            :mod:`disenkg.ops.impls`. (default: ``"auto"``)
        chunk_budget_bytes (int, optional): memory budget of one chunked tile.
        precision (str): the chunked path's GEMMs: ``"fp32"`` (the inputs' precision),
            ``"bf16"`` (float32 CPU inputs rounded to bfloat16 inside the GEMMs, float32
            accumulation and logits, :func:`~disenkg.ops.precision.bf16_matmul`) or
            ``"auto"`` (bf16 on CPUs with bfloat16 matrix hardware). The element-wise
            loss and its gradients stay in the inputs' dtype. (default: ``"fp32"``)
        pos_weight (float, optional): weight :math:`w > 0` of the positive term; ``None``
            = 1. Sparse targets keep the op's cost (only the positives' correction and, with
            label smoothing, a scalar on the background change). (default: ``None``)
        total_entities (int, optional): the whole candidate set's :math:`N` when ``entity``
            is a slice of it (entity sharding, :mod:`disenkg.utils.entity_shards`): label
            smoothing's :math:`1/N`, and ``"mean"`` divides the slice's sum by ``B * N``,
            so that the slices' losses add up to the whole mean. (default: ``None``, the
            entities given)
        total_queries (int, optional): the whole batch's :math:`B` when ``query`` is a
            slice of it (a data-parallel rank's): ``"mean"`` divides by it instead of the
            queries given, so that the ranks' losses add up to the batch's mean (a weight
            applied after the op would copy its saved gradients in backward).
            (default: ``None``, the queries given)

    Returns:
        Scalar loss, or ``(B, N)`` for ``reduction="none"``.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {list(ORDERS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}")
    B, K, F, N = check_inputs(query, entity, att_logits, bias)
    backend, tile = resolve_impl(impl, query.device, query.dtype)
    check_precision(precision)
    if precision == "bf16" and backend == "eager":
        raise ValueError("precision='bf16' is implemented by the chunked schedule and the "
                         "Triton kernels (impl 'chunked', 'native', 'triton' or 'auto'), "
                         "not by 'eager'")
    if backend == "triton":
        bf16 = triton_bf16(precision, query)
    else:
        bf16 = backend == "chunked" and use_bf16(precision, query)
    tgt = make_target(target, B, N, label_smoothing, query.dtype, query.device, pos_weight,
                      total_entities, total_queries)
    if backend == "eager":
        loss = reference_loss(query, entity, att_logits, bias, tgt, order)
        if reduction == "mean":
            return loss.sum() / tgt.mean_count
        return loss.sum() if reduction == "sum" else loss
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        raise ValueError("impl='triton' needs the 'triton' package (pip install disenkg[triton])")
    if order == "before" and K > 1:
        # sum_k a_k <q_k, e_k> = <(a * q) flattened, e flattened>: a K = 1 problem.
        a = torch.softmax(att_logits, dim=-1).unsqueeze(-1)
        query = (a * query).reshape(B, 1, K * F)
        entity = entity.reshape(N, 1, K * F)
        att_logits = att_logits.new_zeros(B, 1)
    loga = torch.log_softmax(att_logits, dim=-1)
    return MixtureBCEFunction.apply(
        query, entity, loga, bias, tgt, reduction, backend, chunk_budget_bytes, bf16, tile
    )


class MixtureBCELoss(nn.Module):
    r"""Module form of :func:`mixture_bce` (same arguments, fixed at construction).

    Args:
        label_smoothing (float): (default: ``0.0``)
        order (str): ``"after"`` or ``"before"``. (default: ``"after"``)
        reduction (str): (default: ``"mean"``)
        impl (str): (default: ``"auto"``)
        precision (str): (default: ``"fp32"``)
        pos_weight (float, optional): (default: ``None``)

    Shapes:
        query ``(B, K, F)``, entity ``(N, K, F)``, att_logits ``(B, K)``, bias ``(N,)``,
        target ``(B, N)`` or ``(rows, cols)``; output scalar or ``(B, N)``.
    """

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        order: str = "after",
        reduction: str = "mean",
        impl: str = "auto",
        precision: str = "fp32",
        pos_weight: float | None = None,
    ) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; choose one of {list(ORDERS)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}")
        check_impl(impl, IMPLS)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.order = order
        self.reduction = reduction
        self.impl = impl
        self.precision = check_precision(precision)
        check_pos_weight(pos_weight)
        self.pos_weight = pos_weight

    def forward(
        self,
        query: Tensor,
        entity: Tensor,
        att_logits: Tensor,
        target: Tensor | tuple[Tensor, Tensor],
        bias: Tensor | None = None,
    ) -> Tensor:
        return mixture_bce(
            query, entity, att_logits, target, bias=bias,
            label_smoothing=self.label_smoothing, order=self.order,
            reduction=self.reduction, impl=self.impl, precision=self.precision,
            pos_weight=self.pos_weight,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(order={self.order!r}, "
            f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}, "
            f"impl={self.impl!r}, precision={self.precision!r})"
        )
