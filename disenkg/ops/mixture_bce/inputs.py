"""Validation of ``mixture_bce`` inputs and the normalised target description.

Targets reach the kernels in one of two forms:

* **dense**: a ``(B, N)`` float tensor of (already smoothed) targets;
* **sparse**: a constant background target ``t0`` everywhere plus the list of
  positive pairs ``(rows, cols)`` whose target is ``t1``.

With label smoothing ``eps > 0`` the DisenKGAT/CompGCN convention is used:
``t = (1 - eps) * y + 1 / N``, so ``t0 = 1/N`` and ``t1 = 1 - eps + 1/N``.

A positive-class weight ``w`` (``pos_weight``, as in ``BCEWithLogitsLoss``) makes the
element loss ``-(w t log p + (1 - t) log(1 - p))``. That is ``s * loss(t')`` with
``s = w t + 1 - t`` and ``t' = w t / s``, so every kernel keeps computing the unweighted
loss at a rescaled target and only multiplies by ``s``: for a sparse target the scalars
``(t0', s0)`` and ``(t1', s1)``; for a dense one a ``(B, N)`` ``scale``. Without smoothing
``t0 = 0`` gives ``s0 = 1``: the background is untouched and only the positives change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ORDERS", "REDUCTIONS", "Target", "check_inputs", "check_pos_weight", "make_target"]

ORDERS = ("after", "before")
REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Target:
    """Smoothed targets: ``dense`` (B, N) or background ``t0`` + positives at ``t1``;
    ``total_cols`` the whole candidate set when the ``num_cols`` scored are a slice of it
    (entity sharding; ``None``: ``num_cols``), ``total_rows`` the whole batch when the
    ``num_rows`` queries are a slice of it (data-parallel; ``None``: ``num_rows``)."""

    num_rows: int
    num_cols: int
    total_cols: int | None = None
    dense: Tensor | None = None
    rows: Tensor | None = None
    cols: Tensor | None = None
    t0: float = 0.0
    t1: float = 1.0
    s0: float = 1.0
    s1: float = 1.0
    scale: Tensor | None = None
    total_rows: int | None = None

    @property
    def mean_count(self) -> int:
        """What ``reduction="mean"`` divides by: ``total_rows * total_cols``."""
        rows = self.num_rows if self.total_rows is None else self.total_rows
        return rows * (self.num_cols if self.total_cols is None else self.total_cols)

    @property
    def is_sparse(self) -> bool:
        return self.dense is None

    @property
    def weighted(self) -> bool:
        """Whether a positive-class weight rescales any element."""
        return self.scale is not None or self.s0 != 1.0 or self.s1 != 1.0


def _check_finite(named: list[tuple[str, Tensor]]) -> None:
    """Raises naming the first tensor with a NaN or inf; one host synchronisation for all
    of them (a GPU waits once per call, not once per tensor)."""
    flags = torch.stack([torch.isfinite(x).all() for _, x in named]).tolist()
    for (name, x), ok in zip(named, flags):
        if not ok:
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_inputs(
    query: Tensor, entity: Tensor, att_logits: Tensor, bias: Tensor | None
) -> tuple[int, int, int, int]:
    """Checks shapes, dtypes, devices and finiteness; returns ``(B, K, F, N)``."""
    for name, x in (("query", query), ("entity", entity), ("att_logits", att_logits)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if query.dim() != 3:
        raise ValueError(f"query must have shape (B, K, F), got {tuple(query.shape)}")
    B, K, F = query.shape
    if entity.dim() != 3 or entity.shape[1:] != (K, F):
        raise ValueError(
            f"entity must have shape (N, K, F) = (N, {K}, {F}) to match query "
            f"{tuple(query.shape)}, got {tuple(entity.shape)}"
        )
    N = entity.shape[0]
    if att_logits.shape != (B, K):
        raise ValueError(
            f"att_logits must have shape (B, K) = ({B}, {K}), got {tuple(att_logits.shape)}"
        )
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"bias must have shape (N,) = ({N},), got {tuple(bias.shape)}")
    named = [("query", query), ("entity", entity), ("att_logits", att_logits)]
    if bias is not None:
        named.append(("bias", bias))
    if not query.is_floating_point():
        raise ValueError(f"query must be a floating point tensor, got {query.dtype}")
    for name, x in named[1:]:
        if x.dtype != query.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but query has dtype {query.dtype}")
        if x.device != query.device:
            raise ValueError(f"{name} is on {x.device} but query is on {query.device}")
    _check_finite([(name, x.detach()) for name, x in named])
    if B == 0 or N == 0 or K == 0:
        raise ValueError(f"empty problem: B={B}, K={K}, N={N}")
    return B, K, F, N


def check_pos_weight(pos_weight: float | None) -> float:
    """``None`` -> 1; else a finite number > 0 (``ValueError`` naming the value)."""
    if pos_weight is None:
        return 1.0
    if isinstance(pos_weight, Tensor):
        if pos_weight.numel() != 1:
            raise ValueError(f"pos_weight must be a scalar, got shape {tuple(pos_weight.shape)}")
        pos_weight = float(pos_weight)
    if isinstance(pos_weight, bool) or not isinstance(pos_weight, (int, float)):
        raise TypeError(f"pos_weight must be a number, got {type(pos_weight).__name__}")
    w = float(pos_weight)
    if not (w > 0 and w != float("inf")):
        raise ValueError(f"pos_weight must be a finite number > 0, got {pos_weight}")
    return w


def _weigh(t: float, w: float) -> tuple[float, float]:
    """``(t', s)`` with ``s * loss(t') = -(w t log p + (1 - t) log(1 - p))``."""
    s = w * t + 1.0 - t
    return w * t / s, s


def make_target(
    target: Tensor | tuple[Tensor, Tensor],
    num_rows: int,
    num_cols: int,
    label_smoothing: float,
    dtype: torch.dtype,
    device: torch.device,
    pos_weight: float | None = None,
    total_entities: int | None = None,
    total_queries: int | None = None,
) -> Target:
    """Validates ``target``, applies label smoothing (``1 / total_entities``, by default
    ``1 / num_cols``), then the positive-class weight; ``total_queries`` (at least
    ``num_rows``) is the batch the rows are a slice of."""
    tgt = _make_target(target, num_rows, num_cols, label_smoothing, dtype, device,
                       total_entities)
    if total_queries is not None:
        if int(total_queries) < num_rows:
            raise ValueError(f"total_queries ({total_queries}) is smaller than the "
                             f"{num_rows} queries scored")
        tgt.total_rows = int(total_queries)
    w = check_pos_weight(pos_weight)
    if w == 1.0:
        return tgt
    if tgt.is_sparse:
        tgt.t0, tgt.s0 = _weigh(tgt.t0, w)
        tgt.t1, tgt.s1 = _weigh(tgt.t1, w)
        return tgt
    y = tgt.dense
    scale = y * (w - 1.0) + 1.0
    tgt.dense = (y * w / scale).contiguous()
    tgt.scale = scale.contiguous()
    return tgt


def _make_target(
    target: Tensor | tuple[Tensor, Tensor],
    num_rows: int,
    num_cols: int,
    label_smoothing: float,
    dtype: torch.dtype,
    device: torch.device,
    total_entities: int | None = None,
) -> Target:
    eps = float(label_smoothing)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    total = num_cols if total_entities is None else int(total_entities)
    if total < num_cols:
        raise ValueError(f"total_entities ({total}) is smaller than the {num_cols} entities "
                         "scored")
    shift = 1.0 / total if eps > 0 else 0.0
    scale = 1.0 - eps
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(
                f"a sparse target is a pair (rows, cols) of long tensors, got {len(target)} items"
            )
        rows, cols = target
        for name, idx in (("rows", rows), ("cols", cols)):
            if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 1:
                raise ValueError(f"sparse target {name} must be a 1-D long tensor")
            if idx.device != device:
                raise ValueError(f"sparse target {name} is on {idx.device}, inputs on {device}")
        if rows.numel() != cols.numel():
            raise ValueError(
                f"sparse target rows and cols differ in length: {rows.numel()} vs {cols.numel()}"
            )
        if rows.numel():
            r0, r1, c0, c1 = torch.stack([rows.min(), rows.max(), cols.min(),
                                          cols.max()]).tolist()  # one synchronisation
            if r0 < 0 or r1 >= num_rows:
                raise ValueError(
                    f"sparse target rows must lie in [0, {num_rows}), got range [{r0}, {r1}]"
                )
            if c0 < 0 or c1 >= num_cols:
                raise ValueError(
                    f"sparse target cols must lie in [0, {num_cols}), got range [{c0}, {c1}]"
                )
            # A pair listed twice is still one positive: coalesce.
            key = torch.unique(rows * num_cols + cols)
            rows, cols = key // num_cols, key % num_cols
        return Target(num_rows, num_cols, total, rows=rows, cols=cols, t0=shift,
                      t1=scale + shift)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a tensor or a (rows, cols) pair, got {type(target)}")
    if target.shape != (num_rows, num_cols):
        raise ValueError(
            f"target must have shape (B, N) = ({num_rows}, {num_cols}) like the scores, got "
            f"{tuple(target.shape)}"
        )
    if target.device != device:
        raise ValueError(f"target is on {target.device}, inputs on {device}")
    if target.is_floating_point():
        _check_finite([("target", target)])
    y = target.to(dtype)
    lo, hi = torch.stack([y.min(), y.max()]).tolist()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"target values must lie in [0, 1], got range [{lo}, {hi}]")
    if eps > 0:
        y = y * scale + shift
    return Target(num_rows, num_cols, total, dense=y.contiguous())
