r"""Defaults derived from a knowledge graph's size, for a KG without a preset.

The authors' settings (batch 2048, lr 0.001, F = 200 with 200 filters, patience 25) are
tuned for FB15k-237: on a small KG they give a handful of optimiser steps per epoch and a
model far wider than the data. The rules, from the training split:

* **batch size**: the largest power of two giving at least 24 optimiser steps per epoch
  over the :math:`Q` distinct 1-N training queries (both directions), in
  :math:`[32, 2048]`, but at least 128 where 128 still gives 8 steps (:math:`Q \ge 1024`):
  :math:`b = \mathrm{clip}(2^{\lfloor\log_2(Q/24)\rfloor}, 32, 2048)`, then
  :math:`\max(b, 128)` if :math:`Q \ge 1024` (batches of 64 overfit the cut FB15k-237 KG
  of the defaults study and were no better on UMLS);
* **learning rate**: 0.003 for :math:`b < 1024`, else the authors' 0.001;
* **width** by the number of entities :math:`N`: :math:`N \ge 5000`: the authors' width
  (F = 200 as a 20 x 10 image, 200 filters of 9 x 9 for InteractE / 7 x 7 for ConvE, base
  size 100, MI weight 0.1); :math:`50 \le N < 5000`: F = 100 (10 x 10), 32 filters of
  5 x 5, base size 100, MI weight 0.01; :math:`N < 50`: F = 50 (10 x 5), 16 filters of
  3 x 3, base size 50, MI weight 0.01. ConvE's embedding follows the same F.
* **epochs**: as many as fit the time budget (default 8 minutes of training and
  validation), from a cost estimate of one epoch, in :math:`[20, 500]`:

  .. math::
     t = \frac{3 K Q\,(2 C k^2 P + 2 C P F + 2 F N)}{\mathrm{FLOPS}}
         + S\,(t_\mathrm{step} + N\,t_\mathrm{entity}),

  with :math:`C` filters of :math:`k \times k` over :math:`P` pixels, :math:`F` the vector
  size, :math:`S = \lceil Q/b \rceil` steps; the constants (:data:`EFFECTIVE_FLOPS`,
  :data:`STEP_OVERHEAD_S`, :data:`ENTITY_STEP_S`) are a least-squares fit to the epochs
  of the defaults study on a 2-core CPU (within 15 % on its four KGs);
* **early stopping**: patience :math:`\max(20, E/5)` validations, counted only after
  ``min_epochs`` :math:`= E/5` epochs, so a run cannot stop before it has learned.

Every value is a default: a flag, a ``--config`` key or a preset overrides it, and the run
prints each derived value and writes it to its ``config.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["BUDGET_MINUTES", "EFFECTIVE_FLOPS", "ENTITY_STEP_S", "STEP_OVERHEAD_S", "WIDTH_BANDS",
           "KGStats", "derive_defaults", "early_stopping", "epoch_seconds", "head_flops",
           "width_band", "width_settings"]

#: default training-and-validation time the derived epoch count aims for (``--time-budget``)
BUDGET_MINUTES = 8.0
#: throughput the epoch estimate assumes for the conv head and the 1-N scoring (counted
#: as multiply-adds x 2, forward + backward; a 2-core CPU, fp32, fitted)
EFFECTIVE_FLOPS = 110e9
#: fixed cost per optimiser step (encoder pass, optimiser, Python; fitted)
STEP_OVERHEAD_S = 0.026
#: cost per optimiser step and entity (the encoder over every entity, its gradients; fitted)
ENTITY_STEP_S = 15e-6


@dataclass(frozen=True)
class KGStats:
    """What the rules read from a KG.

    Args:
        num_entities (int): N.
        num_relations (int): R (without inverses).
        num_train (int): training triples (= message edges per direction).
        num_queries (int): distinct 1-N training queries ``(h, r)`` over both directions.
    """

    num_entities: int
    num_relations: int
    num_train: int
    num_queries: int

    @classmethod
    def of(cls, dataset) -> KGStats:
        return cls(dataset.num_entities, dataset.num_relations, len(dataset.train),
                   len(dataset.training_index()))


#: the smallest entity count of each width band (:func:`width_settings`), smallest first
WIDTH_BANDS = (0, 50, 5000)


def width_band(n: int) -> int:
    """The width band (index into :data:`WIDTH_BANDS`) of a KG of ``n`` entities."""
    return max(i for i, low in enumerate(WIDTH_BANDS) if n >= low)


def width_settings(band: int, model: str, large_kernel: int) -> dict[str, Any]:
    """The width rule's settings of ``band`` (0: N < 50, 1: 50..4999, 2: >= 5000)."""
    if band >= 2:
        w = dict(channels=200, k_h=20, k_w=10, num_filters=200, init_dim=100, mi_weight=0.1,
                 kernel_size=large_kernel)
    elif band == 1:
        w = dict(channels=100, k_h=10, k_w=10, num_filters=32, kernel_size=5, init_dim=100,
                 mi_weight=0.01)
    else:
        w = dict(channels=50, k_h=10, k_w=5, num_filters=16, kernel_size=3, init_dim=50,
                 mi_weight=0.01)
    if model == "conve":  # Dettmers et al.: 32 filters of 3 x 3 at every size
        w = dict(embed_dim=w["channels"], k_h=w["k_h"], k_w=w["k_w"], num_filters=32,
                 kernel_size=3)
    return w


def _width(n: int, model: str, large_kernel: int) -> dict[str, Any]:
    return width_settings(width_band(n), model, large_kernel)


def head_flops(*, queries: int, num_entities: int, dim: int, k_h: int, k_w: int,
               num_filters: int, kernel_size: int, num_components: int) -> float:
    r"""Floating-point operations of the conv head and the 1-N scoring for ``queries``
    training queries, forward and backward (:math:`3\times` the forward's multiply-adds
    :math:`\times 2`), per component: the conv :math:`2 f s^2 p`, the fc :math:`2 f p F`
    and the scoring :math:`2 F N` per query, with :math:`p = 2 k_h k_w` pixels."""
    pixels = 2 * k_h * k_w  # InteractE / ConvE stack two k_h x k_w images
    per_query = (2 * num_filters * kernel_size ** 2 * pixels  # conv
                 + 2 * num_filters * pixels * dim  # fc
                 + 2 * dim * num_entities)  # 1-N scoring
    return 3.0 * num_components * per_query * queries  # forward + backward


def epoch_seconds(stats: KGStats, *, batch_size: int, dim: int, k_h: int, k_w: int,
                  num_filters: int, kernel_size: int, num_components: int) -> float:
    """Estimated seconds of one training epoch (see the module docstring)."""
    flops = head_flops(queries=stats.num_queries, num_entities=stats.num_entities, dim=dim,
                       k_h=k_h, k_w=k_w, num_filters=num_filters, kernel_size=kernel_size,
                       num_components=num_components)
    steps = math.ceil(stats.num_queries / batch_size)
    return flops / EFFECTIVE_FLOPS + steps * (STEP_OVERHEAD_S
                                              + ENTITY_STEP_S * stats.num_entities)


def derive_defaults(stats: KGStats, *, model: str, given: dict[str, Any],
                    budget_minutes: float = BUDGET_MINUTES, large_kernel: int = 9
                    ) -> dict[str, tuple[Any, str]]:
    """The derived value and its reason for every key of ``given`` that is ``None``.

    Args:
        stats: the KG's sizes.
        model: ``"disenkgat"`` or ``"conve"``.
        given: current values by key (``None`` = to be derived); values already set are
            used by the later rules (a given batch size sets the learning rate rule, a
            given width the epoch estimate).
        budget_minutes: training time the epoch rule aims for.
        large_kernel: DisenKGAT's kernel at the authors' width (9 InteractE, 7 ConvE).
    """
    if stats.num_queries < 1 or stats.num_entities < 1:
        raise ValueError(f"a KG needs training triples, got {stats}")
    out: dict[str, tuple[Any, str]] = {}
    cur = dict(given)

    def put(key: str, value: Any, why: str) -> None:
        if cur.get(key) is None:
            cur[key] = value
            out[key] = (value, why)

    q = stats.num_queries
    b = int(min(2048, max(32, 2 ** math.floor(math.log2(max(1.0, q / 24))))))
    if q >= 1024:
        b = max(b, 128)
    put("batch_size", b, f"{q} training queries: >= 24 steps per epoch, a power of two in "
                         f"[32, 2048], at least 128 from 1024 queries")
    put("lr", 0.003 if cur["batch_size"] < 1024 else 0.001,
        f"batch {cur['batch_size']} {'<' if cur['batch_size'] < 1024 else '>='} 1024")
    n = stats.num_entities
    band = ">= 5000" if n >= 5000 else ("50..4999" if n >= 50 else "< 50")
    dim_key = "channels" if model == "disenkgat" else "embed_dim"
    dim_given = cur.get(dim_key) is not None
    for key, value in _width(n, model, large_kernel).items():
        if key in cur and not (dim_given and key in ("k_h", "k_w")):
            put(key, value, f"{n} entities ({band})")
    if cur.get("k_h") is None or cur.get("k_w") is None:  # tile a given vector size
        kh, kw = _factor(cur[dim_key])
        put("k_h", kh, f"the image tiles --{dim_key.replace('_', '-')} {cur[dim_key]}")
        put("k_w", kw, f"the image tiles --{dim_key.replace('_', '-')} {cur[dim_key]}")
    ks = cur.get("kernel_size")
    if "kernel_size" in out and ks is not None and ks > min(2 * cur["k_h"], cur["k_w"]):
        fit = min(2 * cur["k_h"], cur["k_w"])  # the two stacked k_h x k_w images
        cur["kernel_size"] = fit
        out["kernel_size"] = (fit, f"{out['kernel_size'][1]}, at most the {2 * cur['k_h']} "
                                   f"x {cur['k_w']} image")
    dim = cur[dim_key]
    est = epoch_seconds(stats, batch_size=cur["batch_size"], dim=dim, k_h=cur["k_h"],
                        k_w=cur["k_w"], num_filters=cur["num_filters"],
                        kernel_size=cur["kernel_size"],
                        num_components=cur.get("num_components") or 1)
    epochs = int(min(500, max(20, budget_minutes * 60 / est)))
    put("epochs", epochs, f"~{est:.2f} s per epoch (estimate) in a {budget_minutes:g}-minute "
                          f"budget, in [20, 500]")
    e = cur["epochs"]
    patience, min_epochs = early_stopping(e)
    put("patience", patience, f"max(20, epochs / 5) with epochs = {e}")
    put("min_epochs", min_epochs, f"epochs / 5 with epochs = {e}: patience counts after it")
    return out


def early_stopping(epochs: int) -> tuple[int, int]:
    r"""``(patience, min_epochs)`` for a run of ``epochs``: :math:`\max(20, E/5)` and
    :math:`E/5`."""
    return max(20, epochs // 5), epochs // 5


def _factor(dim: int) -> tuple[int, int]:
    """``k_h >= k_w`` with ``k_h * k_w = dim`` and the two closest to a 2:1 image."""
    best = (dim, 1)
    for kw in range(1, int(math.isqrt(dim)) + 1):
        if dim % kw == 0:
            kh = dim // kw
            if abs(math.log(kh / kw / 2)) < abs(math.log(best[0] / best[1] / 2)):
                best = (kh, kw)
    return best
