r"""The plain command's built-in search: on a KG where one training run costs a small part
of the time budget, a few candidate settings are tried on the validation split and the best
is trained for the rest of the budget.

Fixed rules fitted on a few KGs cannot be right on every KG; what a careful person does with
eight minutes on a small KG is try a few settings and keep the best. ``--search auto`` (the
default) does that when it pays, ``--search none`` never does, ``--search on`` always does.

**Candidates** (:func:`candidates`), in this order, at most :data:`MAX_CANDIDATES`: the
size-derived settings (:mod:`disenkg.defaults`); the settings of the preset tuned on the KG
closest in size (:func:`~disenkg.presets.nearest_preset`, DisenKGAT); a 4x larger batch;
the next wider and narrower width of the size rule; the learning rate x3 and /3; one
component (K = 1); more dropout (+0.2, at most 0.6) and less (halved). A candidate changes
only settings nobody gave: a flag, a ``--config`` key or a preset fixes a setting for every
candidate, and a candidate that would change only fixed settings is left out.

**Successive halving** with the time budget :math:`B` (``--time-budget``) as the currency:
the search spends :math:`sB` (:data:`SEARCH_SHARE`), in two rungs. With :math:`n`
candidates and :math:`m = \lceil n/\eta\rceil` survivors (:data:`ETA` = 3), each candidate
gets :math:`T_1 = sB / (n + (\eta - 1) m)` seconds in the first rung and the survivors
:math:`\eta T_1` in all; a candidate's epochs are its time over its epoch estimate
(:func:`~disenkg.defaults.epoch_seconds`, the estimate behind the derived ``--epochs``), so a
larger batch gets more epochs for the same time, and the schedule depends on the settings
only, never on a clock: the search is deterministic for a seed. Each candidate is an
ordinary run in ``OUTPUT_DIR/search/NN`` (:func:`~disenkg.pipeline.trial.train_trial`,
without early stopping, never tested); the survivors are the first rung's best
:math:`m` by validation MRR and continue (resumed) to the second rung; the best of the
second rung wins (ties: the earlier candidate).

**The run** then trains the winner in ``OUTPUT_DIR`` from the start, with the epochs the rest
of the budget holds, :math:`\mathrm{clip}((B - \hat t_\mathrm{search}) / \hat t_w, 20, 500)`
from the same estimates, and at least its second-rung epochs; its early stopping follows
those epochs. Its ``config.json`` records the search (``search``: every candidate, its
settings, epochs and validation MRR per rung, the chosen one) and each setting the search
chose under ``sources`` as ``search``; ``search.tsv`` is the same table.

**When** (``auto``): no preset applies (a preset's settings are tuned already), the run's
length is not given (``--epochs`` fixes a run, not a budget to spend), one process (not
under torchrun), at least two candidates, and, from the epoch estimate of the
size-derived settings, one training run costs a small part of the budget: after the search
they would still train :data:`MIN_FINAL_EPOCHS` epochs (half the epoch cap), and they get
at least :data:`MIN_RUNG_EPOCHS` in the first rung. At the default 8-minute budget that
holds on UMLS-sized KGs (5 000 triples, ~0.6 s an epoch) and smaller; from Kinship's size
(8 500 triples, ~1.1 s) it does not, and the plain command trains the size-derived
settings as before (a larger ``--time-budget`` moves the line).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from disenkg.config.toml import read_toml
from disenkg.datasets import KGDataset
from disenkg.defaults import KGStats, epoch_seconds, width_band, width_settings
from disenkg.errors import ConfigError, RunDirError
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.pipeline.run import load_dataset, prepare_run, train_link
from disenkg.pipeline.trial import follow_dim, train_trial
from disenkg.presets import PRESET_MODEL, find_preset, nearest_preset
from disenkg.runs.rundir import RunDir
from disenkg.training.config import TrainingConfig
from disenkg.utils.io import atomic_write_text

__all__ = ["ETA", "MAX_CANDIDATES", "MIN_FINAL_EPOCHS", "MIN_RUNG_EPOCHS", "SEARCH_DIR",
           "SEARCH_SHARE", "SEARCH_TABLE", "Candidate", "SearchPlan", "candidates",
           "final_epochs", "plan_search", "run_search", "train_searched"]

logger = logging.getLogger(__name__)

#: share of the time budget the search spends; the chosen settings train for the rest
SEARCH_SHARE = 0.5
#: 1 / ETA of the candidates survive the first rung, with ETA times its time in all
ETA = 3
#: the most candidates a search trains
MAX_CANDIDATES = 9
#: ``auto`` searches only if the size-derived candidate gets this many first-rung epochs
MIN_RUNG_EPOCHS = 15
#: ``auto`` searches only if the size-derived settings still get this many epochs after it
MIN_FINAL_EPOCHS = 250
#: where the candidates' runs go, and the table of the search, in the run directory
SEARCH_DIR = "search"
SEARCH_TABLE = "search.tsv"
#: sources of settings a person (or a preset) chose: the search leaves them as they are
FIXED_SOURCES = ("preset", "config", "flag", "api", "saved", "tune")
#: settings of a run's length and bookkeeping that a preset candidate does not take
_NOT_FROM_PRESET = ("epochs", "patience", "min_epochs", "eval_every", "time_budget", "seed")


@dataclass(frozen=True)
class Candidate:
    """Settings one candidate changes (``None``: derive again from the KG)."""

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items() if v is not None)
        return f"{self.name}" + (f" ({shown})" if shown else "")


@dataclass(frozen=True)
class SearchPlan:
    """The candidates and their schedule (:func:`plan_search`).

    Attributes:
        candidates: the settings tried, the size-derived ones first.
        epoch_seconds: each candidate's estimated seconds per epoch.
        rung_seconds: :math:`T_1`, each candidate's estimated time in the first rung.
        budget_seconds: :math:`B`.
        reason: why the search runs.
    """

    candidates: list[Candidate]
    epoch_seconds: list[float]
    rung_seconds: float
    budget_seconds: float
    reason: str

    @property
    def survivors(self) -> int:
        return math.ceil(len(self.candidates) / ETA)

    def epochs(self, i: int, rung: int) -> int:
        """Candidate ``i``'s epochs at the end of ``rung`` (1 or 2)."""
        first = max(1, round(self.rung_seconds / self.epoch_seconds[i]))
        if rung == 1:
            return first
        return max(first + 1, round(ETA * self.rung_seconds / self.epoch_seconds[i]))


def _fixed(config: LinkConfig) -> set[str]:
    return {k for k, src in config.sources.items() if src in FIXED_SOURCES}


def _estimate(config: LinkConfig, stats: KGStats) -> float:
    """Estimated seconds of one epoch of a derived configuration."""
    m = config.model.values()
    dim = m.get(config.model.DIM_FIELD) or 1
    conv = config.model.is_conv()
    return epoch_seconds(stats, batch_size=config.training.batch_size, dim=dim,
                         k_h=m.get("k_h") or 0 if conv else 0,
                         k_w=m.get("k_w") or 0 if conv else 0,
                         num_filters=m.get("num_filters") or 0 if conv else 0,
                         kernel_size=m.get("kernel_size") or 0 if conv else 0,
                         num_components=m.get("num_components") or 1)


def candidates(config: LinkConfig, derived: LinkConfig, stats: KGStats) -> list[Candidate]:
    """The candidates of a search (see the module docstring).

    Args:
        config: the resolved configuration, before the KG's size is applied (its
            ``sources`` tell which settings were given).
        derived: ``config`` with the size-derived settings filled.
        stats: the KG's sizes.
    """
    fixed = _fixed(config)
    model, training = derived.model, derived.training
    current = {**training.values(), **model.values()}
    applies = set(model.applicable(model.values())) | set(TrainingConfig.option_names())
    out = [Candidate("size-derived")]

    large = 7 if getattr(model, "scorer", None) == "conve" else 9
    width = set(width_settings(1, model.name, large)) - {"mi_weight"}

    def add(name: str, values: Mapping[str, Any], *, coupled: bool = True) -> None:
        values = {k: v for k, v in values.items() if k in applies}
        if coupled and any(k in fixed for k in values):
            return  # a change whose parts belong together, one of them given
        if width & fixed:  # the vector size and its image belong together
            values = {k: v for k, v in values.items() if k not in width}
        values = {k: v for k, v in values.items() if k not in fixed
                  and (k in width or v is None or current.get(k) != v)}
        if all(v is not None and current.get(k) == v for k, v in values.items()):
            return  # nothing left to change
        if any(dict(c.values) == values for c in out):
            return
        out.append(Candidate(name, values))

    if model.name == PRESET_MODEL and config.run.preset is None:
        near = nearest_preset(stats.num_entities, stats.num_train)
        path = find_preset(near)
        if path is not None:
            values = {k: v for k, v in read_toml(path).items()
                      if k not in _NOT_FROM_PRESET and k != "model"}
            add(f"preset {near}", values, coupled=False)
    b = training.batch_size
    if b * 4 <= 2048 and stats.num_queries / (4 * b) >= 4:
        lr = {} if "lr" in fixed else {"lr": None}  # the lr rule follows the batch
        add("batch x4", {"batch_size": 4 * b, **lr})
    band = width_band(stats.num_entities)
    for step, word in ((1, "wider"), (-1, "narrower")):
        if 0 <= band + step <= 2:
            add(word, width_settings(band + step, model.name, large))
    lr = training.lr
    add("lr x3", {"lr": float(f"{lr * 3:.3g}")})
    add("lr /3", {"lr": float(f"{lr / 3:.3g}")})
    if getattr(model, "num_components", 1) > 1:
        add("K = 1", {"num_components": 1})
    drops = {k: v for k, v in model.values().items()
             if k.endswith("dropout") and isinstance(v, float)}
    add("more dropout", {k: round(min(0.6, v + 0.2), 3) for k, v in drops.items()},
        coupled=False)
    add("less dropout", {k: round(v / 2, 3) for k, v in drops.items()}, coupled=False)
    return out[:MAX_CANDIDATES]


def _layer(values: Mapping[str, Any], where: str) -> Layer:
    return Layer("search", dict(values), where)


def _resolved(layers: list[Layer], cand: Candidate, base: LinkConfig,
              dataset: KGDataset) -> LinkConfig:
    values = follow_dim(cand.values, base, _fixed(base))
    return LinkConfig.resolve([*layers, _layer(values, cand.name)]).derive(dataset)[0]


def _without_data(config: LinkConfig) -> str | None:
    """Why there is no search, where the settings alone tell (else ``None``).

    Raises:
        ConfigError: ``search = "on"`` under torchrun.
    """
    mode = config.training.search
    if mode == "none":
        return "--search none"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if mode == "on":
            raise ConfigError("--search on runs its candidates in one process; under "
                              f"torchrun ({world} processes) give --search none, or search "
                              "first in one process")
        return f"{world} processes (torchrun)"
    if mode == "auto" and config.run.preset is not None:
        return f"preset {config.run.preset}: its settings are tuned"
    if mode == "auto" and config.sources.get("epochs") in FIXED_SOURCES:
        return (f"epochs = {config.training.epochs} given ({config.sources['epochs']}): "
                "the run's length is fixed, not a time budget to spend")
    return None


def plan_search(layers: list[Layer], config: LinkConfig, dataset: KGDataset
                ) -> tuple[SearchPlan | None, str]:
    """The search ``config`` asks for on ``dataset`` (``None`` and the reason when there is
    none); ``layers`` are the settings as given (``config`` resolved from them).

    Raises:
        ConfigError: ``search = "on"`` where a search cannot run (several processes).
    """
    skip = _without_data(config)
    if skip is not None:
        return None, skip
    stats = KGStats.of(dataset)
    derived, _ = config.derive(dataset)
    cands = candidates(config, derived, stats)
    if len(cands) < 2:
        return None, "every setting a candidate would change was given"
    seconds = [_estimate(_resolved(layers, c, config, dataset), stats) for c in cands]
    budget = 60 * config.training.time_budget

    def rung_of(n: int) -> float:
        return SEARCH_SHARE * budget / (n + (ETA - 1) * math.ceil(n / ETA))

    # a candidate too slow to learn anything in the first rung is left out (a wider model
    # on a KG near a width band's edge): one with fewer first-rung epochs than the
    # MIN_RUNG_EPOCHS (or, fewer still, the size-derived one's), which always stays
    floor = min(MIN_RUNG_EPOCHS, max(1, round(rung_of(len(cands)) / seconds[0])))
    keep = [i for i, s in enumerate(seconds)
            if i == 0 or round(rung_of(len(cands)) / s) >= floor]
    cands, seconds = [cands[i] for i in keep], [seconds[i] for i in keep]
    if len(cands) < 2:
        return None, (f"only the size-derived settings fit a first rung in the "
                      f"{config.training.time_budget:g}-minute budget")
    rung = rung_of(len(cands))
    first = rung / seconds[0]
    why = (f"{len(cands)} candidates, {rung:.0f} s each in the first rung: "
           f"{round(first)} epochs of ~{seconds[0]:.2f} s for the size-derived settings")
    after = (1 - SEARCH_SHARE) * budget / seconds[0]
    if config.training.search == "auto" and round(after) < MIN_FINAL_EPOCHS:
        return None, (f"one epoch ~{seconds[0]:.2f} s (estimate): after a search the "
                      f"size-derived settings would train {round(after)} epochs of the "
                      f"{MIN_FINAL_EPOCHS} a run needs in the "
                      f"{config.training.time_budget:g}-minute budget")
    if config.training.search == "auto" and round(first) < MIN_RUNG_EPOCHS:
        return None, (f"one epoch ~{seconds[0]:.2f} s (estimate): the first rung would give "
                      f"the size-derived settings {round(first)} epochs of the "
                      f"{MIN_RUNG_EPOCHS} a search needs in the "
                      f"{config.training.time_budget:g}-minute budget")
    return SearchPlan(cands, seconds, rung, budget, why), why


def _check_dir(run_dir: RunDir, config: LinkConfig) -> None:
    """A search left in the run directory is continued (``resume``), replaced
    (``overwrite``) or refused."""
    left = [n for n in (SEARCH_DIR, SEARCH_TABLE) if run_dir.file(n).exists()]
    if left and not (config.run.resume or config.run.overwrite):
        raise RunDirError(f"{run_dir.path} holds a search ({', '.join(left)}) of an earlier "
                          "run", hint="pass --resume to continue it, --overwrite to replace "
                                      "it, or --output-dir for a new directory")


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["candidate", "name", "settings", "epochs_1", "valid_mrr_1", "epochs_2",
            "valid_mrr_2", "seconds", "chosen"]
    lines = ["\t".join(cols)]
    for r in rows:
        lines.append("\t".join("" if r.get(c) is None else str(r[c]) for c in cols))
    return "\n".join(lines) + "\n"


def run_search(plan: SearchPlan, layers: list[Layer], config: LinkConfig, run_dir: RunDir,
               dataset: KGDataset) -> tuple[int, dict[str, Any]]:
    """Trains the candidates of ``plan`` rung by rung; returns the winner's index and the
    search's record (``config.json``'s ``search``)."""
    t0 = time.perf_counter()
    root = run_dir.file(SEARCH_DIR)
    root.mkdir(exist_ok=True)
    fixed = _fixed(config)
    rows: list[dict[str, Any]] = []
    for i, c in enumerate(plan.candidates):
        rows.append({"candidate": i, "name": c.name,
                     "settings": ", ".join(f"{k}={v}" for k, v in c.values.items()) or "-",
                     "values": dict(c.values), "seconds": 0.0})

    def train(i: int, rung: int) -> float:
        c = plan.candidates[i]
        epochs = plan.epochs(i, rung)
        values = follow_dim(c.values, config, fixed)
        if rung > 1:  # "derive it" was done in rung 1; the resumed run keeps what it derived
            values = {k: v for k, v in values.items() if v is not None}
        values = {**values, "epochs": epochs, "patience": 0,
                  "min_epochs": 0, "output_dir": str(root / f"{i:02d}"), "resume": True,
                  "overwrite": False}
        s0 = time.perf_counter()
        metrics = train_trial([*layers, _layer(values, f"search candidate {i}")],
                              dataset=dataset)
        rows[i]["seconds"] = round(rows[i]["seconds"] + time.perf_counter() - s0, 1)
        mrr = float(metrics["valid"]["mrr"])
        rows[i][f"epochs_{rung}"], rows[i][f"valid_mrr_{rung}"] = epochs, round(mrr, 5)
        logger.info("search: candidate %d/%d %s, rung %d, %d epochs: valid MRR %.4f",
                    i + 1, len(plan.candidates), c.describe(), rung, epochs, mrr)
        return mrr

    logger.info("search: %s", plan.reason)
    first = [train(i, 1) for i in range(len(plan.candidates))]
    order = sorted(range(len(first)), key=lambda i: (-first[i], i))
    second = {i: train(i, 2) for i in sorted(order[:plan.survivors])}
    winner = min(second, key=lambda i: (-second[i], i))
    rows[winner]["chosen"] = "yes"
    logger.info("search: chose candidate %d, %s (valid MRR %.4f)", winner + 1,
                plan.candidates[winner].describe(), second[winner])
    atomic_write_text(_table(rows), run_dir.file(SEARCH_TABLE))
    spent = sum(plan.epoch_seconds[i] * r[f"epochs_{k}"] for i, r in enumerate(rows)
                for k in (1, 2) if r.get(f"epochs_{k}") is not None)
    record = {"reason": plan.reason, "budget_seconds": plan.budget_seconds,
              "rung_seconds": round(plan.rung_seconds, 2), "eta": ETA,
              "estimated_seconds": round(spent, 1),
              "seconds": round(time.perf_counter() - t0, 1), "chosen": winner,
              "candidates": [{k: r.get(k) for k in ("name", "values", "epochs_1",
                                                    "valid_mrr_1", "epochs_2", "valid_mrr_2",
                                                    "seconds")} for r in rows]}
    return winner, record


def final_epochs(plan: SearchPlan, winner: int, spent: float) -> int:
    """The winner's epochs in the run: the rest of the budget over its epoch estimate, in
    [20, 500], at least its second-rung epochs."""
    rest = max(0.0, plan.budget_seconds - spent) / plan.epoch_seconds[winner]
    return max(plan.epochs(winner, 2), int(min(500, max(20, rest))))


def train_searched(layers: list[Layer], config: LinkConfig, run_dir: RunDir) -> dict[str, Any]:
    """What the plain command and :func:`disenkg.train` run: the search where
    ``config.training.search`` and the KG call for one (:func:`plan_search`), then the run in
    ``run_dir`` (:func:`~disenkg.pipeline.run.train_link`); returns its metrics.

    Args:
        layers: the settings as given (``config`` was resolved from them by
            :func:`~disenkg.pipeline.run.prepare_run`, which also prepared ``run_dir``).
    """
    if config.run.resume and run_dir.file("last.pt").exists():
        return train_link(config, run_dir)  # the run itself is being continued
    _check_dir(run_dir, config)
    skip = _without_data(config)
    if skip is not None:
        logger.info("no search: %s", skip)
        return train_link(config, run_dir)
    dataset = load_dataset(config)
    plan, why = plan_search(layers, config, dataset)
    if plan is None:
        logger.info("no search: %s", why)
        return train_link(config, run_dir, dataset=dataset)
    if config.run.overwrite and not config.run.resume:
        run_dir.replace_previous()  # the data are in hand; the search writes here
    winner, record = run_search(plan, layers, config, run_dir, dataset)
    values = dict(plan.candidates[winner].values)
    if "epochs" not in _fixed(config):
        values["epochs"] = final_epochs(plan, winner, record["estimated_seconds"])
    values = follow_dim(values, config, _fixed(config))
    final, run_dir = prepare_run([*layers, _layer(values, "the search's choice")])
    logger.info("search: training the chosen settings for up to %s epochs",
                final.training.epochs or "the derived")
    return train_link(final, run_dir, dataset=dataset, search=record)

