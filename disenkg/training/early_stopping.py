"""Early stopping, one implementation for link and node training.

A validation step reports one or more metrics, each with its direction (``max``: higher is
better, ``min``: lower). A value *improves* on the best so far when it is better (strictly,
or also when equal with ``strict=False``); the step improves when any metric does, and the
step is *best* when every metric does (a single metric: the two coincide). An improving step
resets the count of bad validations; any other step adds one, once ``epoch >
min_epochs``; training stops when ``patience > 0`` and the count reaches ``patience``.

* link prediction: one metric (validation MRR, ``max``), strict, ``min_epochs`` from the
  configuration;
* node classification: the GAT authors' criterion, accuracy (``max``) and loss
  (``min``), not strict: patience resets when either reaches its best so far; the model
  is kept when both do;
* VGAE: AUC (or AUC + AP), ``max``, strict; the array task: the validation metric with
  ``patience = 0`` (every epoch runs, the best model is kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EarlyStopping", "Verdict"]

MODES = ("max", "min")


@dataclass(frozen=True)
class Verdict:
    """What one validation step was: ``improved`` (some metric reached its best; the bad
    count was reset) and ``best`` (every metric did: keep this model)."""

    improved: bool
    best: bool


class EarlyStopping:
    """Best-so-far values and patience (see the module docstring).

    Args:
        patience (int): bad validations before stopping; 0 = never stop.
        min_epochs (int): bad validations count only after this epoch. (default: ``0``)
        modes (sequence of str): ``"max"`` / ``"min"`` per metric. (default: ``("max",)``)
        strict (bool): only a strictly better value improves. (default: ``True``)
    """

    def __init__(self, *, patience: int, min_epochs: int = 0,
                 modes: Sequence[str] = ("max",), strict: bool = True) -> None:
        if patience < 0 or min_epochs < 0:
            raise ValueError(f"patience and min_epochs must be >= 0, got {patience}, "
                             f"{min_epochs}")
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"modes must be {list(MODES)} per metric, got {list(modes)}")
        self.patience, self.min_epochs = patience, min_epochs
        self.modes, self.strict = tuple(modes), strict
        self.best: list[float] = [-math.inf if m == "max" else math.inf for m in self.modes]
        self.best_epoch = 0
        self.bad = 0

    def _better(self, value: float, best: float, mode: str) -> bool:
        if mode == "max":
            return value > best or (not self.strict and value == best)
        return value < best or (not self.strict and value == best)

    def update(self, *values: float, epoch: int) -> Verdict:
        """Records the validation of ``epoch``; returns what it was."""
        if len(values) != len(self.modes):
            raise ValueError(f"expected {len(self.modes)} metric(s), got {len(values)}")
        better = [self._better(v, b, m) for v, b, m in zip(values, self.best, self.modes)]
        if any(better):
            self.best = [(max if m == "max" else min)(v, b)
                         for v, b, m in zip(values, self.best, self.modes)]
            self.bad = 0
            if all(better):
                self.best_epoch = epoch
            return Verdict(improved=True, best=all(better))
        if epoch > self.min_epochs:
            self.bad += 1
        return Verdict(improved=False, best=False)

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best), "best_epoch": self.best_epoch, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = [float(v) for v in state["best"]]
        self.best_epoch, self.bad = int(state["best_epoch"]), int(state["bad"])
