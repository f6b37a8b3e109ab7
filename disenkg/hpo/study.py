"""A hyper-parameter search as an Optuna study whose trials are ordinary link runs.

:func:`run_study` loads the KG once, opens (or resumes) the study in its storage, and runs
trials until the study has ``trials`` finished ones. Each trial is the configuration the
command line would give (flags and ``--config`` keys fixed for every trial) with the searched
settings drawn by the sampler, trained by :func:`~disenkg.pipeline.trial.train_trial` into
``OUTPUT_DIR/trials/NUMBER``; its validation MRR is reported to Optuna after every
validation so the pruner can stop it, and its best validation MRR is the trial's value. The
test split is never seen by the search: only the best trial is evaluated on it, at the end.

Safety: a trial that raises (a combination the rules refuse, out of memory, a non-finite
loss) is recorded as failed with its error and the study goes on (``max_failures`` in a row
stop this worker); Ctrl-C marks the running trial failed before it stops, so the database
stays consistent; re-running the same command resumes the study; the study records its
fixed settings and space, and a run with other ones is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disenkg.config.search import Dimension
from disenkg.datasets import KGDataset
from disenkg.errors import ConfigError, UserError
from disenkg.hpo.config import TuneConfig
from disenkg.hpo.space import resolve_space
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.pipeline.run import default_output_dir, load_dataset
from disenkg.pipeline.trial import follow_dim, train_trial
from disenkg.runs.rundir import check_writable

__all__ = ["RUN_ONLY", "TuneResult", "make_pruner", "make_sampler", "require_optuna",
           "run_study", "study_dir"]

logger = logging.getLogger(__name__)

#: settings that do not change what a trial computes (not part of a study's identity)
RUN_ONLY = ("output_dir", "resume", "overwrite", "device", "tensorboard", "no_progress",
            "log_level", "debug", "data_dir", "max_archive_mb")
#: tries to open the storage (workers started together race to create its tables)
STORAGE_ATTEMPTS = 6
#: trials in these states count toward ``trials``
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def require_optuna() -> Any:
    """The ``optuna`` module, or a one-line error naming the extra."""
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("tune needs the optuna package, which is not installed",
                          hint='pip install "disenkg[tune]"') from err
    return optuna


def study_dir(config: LinkConfig) -> Path:
    """``OUTPUT_DIR``, by default ``runs/tune-DATASET-MODEL``."""
    if config.run.output_dir:
        return Path(config.run.output_dir)
    plain = default_output_dir(config.data.dataset, config.model_name)
    return plain.parent / f"tune-{plain.name}"


def make_sampler(name: str, seed: int, first: Mapping[str, Any] | None = None) -> Any:
    """Optuna's TPE or random sampler, seeded per trial by ``(seed, trial number)``.

    One seed for the whole study would make two workers started together draw the same
    trials; seeding each trial by its number (unique in the study) keeps a single worker
    deterministic for a seed and lets workers differ. The samplers keep no state but their
    random generator (the history is read from the study), so a fresh one per trial loses
    nothing. ``first``: the values trial 0 takes (the baseline; the storage numbers trials
    atomically, so two workers starting together never both train it, as two enqueued
    copies could); parameters it lacks are sampled.
    """
    optuna = require_optuna()
    kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return _trial_seeded(optuna)(lambda s: kinds[name](seed=s), seed, dict(first or {}))


def _trial_seeded(optuna: Any) -> type:
    base = optuna.samplers.BaseSampler

    class TrialSeededSampler(base):  # type: ignore[misc, valid-type]
        """Delegates each trial to a sampler seeded by ``(seed, trial number)``."""

        def __init__(self, factory: Callable[[int], Any], seed: int,
                     first: dict[str, Any]) -> None:
            self._factory, self._seed, self._first = factory, seed, first
            self._by_number: dict[int, Any] = {}

        def _for(self, trial: Any) -> Any:
            sampler = self._by_number.get(trial.number)
            if sampler is None:
                sampler = self._factory((self._seed * 1_000_003 + trial.number) % 2**32)
                self._by_number[trial.number] = sampler
            return sampler

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            if trial.number == 0 and self._first:
                return {}  # trial 0's values come one by one from sample_independent
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            if trial.number == 0 and name in self._first:
                return self._first[name]
            return self._for(trial).sample_independent(study, trial, name, dist)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._by_number.pop(trial.number, None)

    return TrialSeededSampler


def make_pruner(name: str, warmup: int) -> Any:
    """The ``--pruner``: ``warmup`` epochs before a trial can be stopped, and (median,
    percentile) 4 finished trials before any is."""
    optuna = require_optuna()
    p = optuna.pruners
    if name == "median":
        return p.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup)
    if name == "percentile":
        return p.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=warmup)
    if name == "hyperband":
        return p.HyperbandPruner(min_resource=max(1, warmup))
    if name == "successive_halving":
        return p.SuccessiveHalvingPruner(min_resource=max(1, warmup))
    return p.NopPruner()


@dataclass(frozen=True)
class TuneResult:
    """What a search left: the study, its directory, and its best trial (if any finished).

    Attributes:
        study: the ``optuna.Study``.
        output_dir: the study directory (``trials/``, ``best``, the report).
        best_number: the best trial's number (``None`` if no trial completed).
        best_value: its validation MRR.
        best_run_dir: its run directory (``load_run`` reads it).
        best_test: its test metrics (evaluated once, at the end).
    """

    study: Any
    output_dir: Path
    best_number: int | None
    best_value: float | None
    best_run_dir: Path | None
    best_test: Mapping[str, Any] | None

    def counts(self) -> dict[str, int]:
        """Trials by state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ...)."""
        out: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name] = out.get(t.state.name, 0) + 1
        return out


def _identity(config: LinkConfig, space: Mapping[str, Dimension],
              dataset: KGDataset) -> dict[str, Any]:
    """What defines a study: the fixed settings, the space and the KG's files."""
    fixed = {k: v for k, v in config.flat().items() if k not in RUN_ONLY}
    return {"settings": fixed, "space": {k: d.to_toml() for k, d in space.items()},
            "dataset": dataset.fingerprint or dataset.name}


def _check_identity(study: Any, identity: dict[str, Any], name: str) -> None:
    saved = study.user_attrs.get("disenkg")
    if saved is None:
        study.set_user_attr("disenkg", identity)
        return
    saved = json.loads(json.dumps(saved))
    now = json.loads(json.dumps(identity))
    diffs = []
    for part in ("settings", "space"):
        keys = set(saved.get(part, {})) | set(now[part])
        diffs += [f"{part} {k}: {saved.get(part, {}).get(k)!r} -> {now[part].get(k)!r}"
                  for k in sorted(keys) if saved.get(part, {}).get(k) != now[part].get(k)]
    if saved.get("dataset") != now["dataset"]:
        diffs.append("the dataset's files differ")
    if diffs:
        raise ConfigError(f"study {name!r} was started with other settings: "
                          + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else ""),
                          hint="give the same flags to resume it, or a new --study-name")


def _open_storage(url: str) -> Any:
    optuna = require_optuna()
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a database URL such as "
                          "sqlite:///study.db or postgresql://user@host/db")
    from sqlalchemy.exc import IntegrityError, OperationalError

    # a heartbeat marks the trials of a killed worker failed instead of running forever
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=60,
                                                  grace_period=180)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"--storage {url!r}: {err}") from err
        except (IntegrityError, OperationalError) as err:
            # workers started together race to create a new database's tables: the loser
            # finds them made on its next attempt (a database that stays unreachable
            # raises after the last)
            if attempt == STORAGE_ATTEMPTS - 1:
                raise ConfigError(f"--storage {url!r}: {str(err).splitlines()[0]}") from err
            logger.debug("storage %s not ready (%s); retrying", url, type(err).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _finished(study: Any) -> int:
    """Trials that count toward ``trials``: complete, pruned or failed (an interrupted
    trial is not a result and does not count)."""
    return sum(t.state.name in FINISHED and not t.user_attrs.get("interrupted")
               for t in study.get_trials(deepcopy=False))


class _TrialLimit:
    """Stops the worker once the study (all workers) has ``limit`` finished trials."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, study: Any, trial: Any) -> None:
        if _finished(study) >= self.limit:
            study.stop()


def _forbid(layers: list[Layer]) -> None:
    for layer in layers:
        for key in ("resume", "overwrite"):
            if layer.values.get(key):
                raise ConfigError(f"--{key} does not apply to tune: re-running the same "
                                  "command resumes the study; a new --study-name (or "
                                  "--output-dir) starts another")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("tune runs its trials in one process each: start several workers "
                          "with the same --storage and --study-name instead of torchrun")


class _Objective:
    """One trial: draw the settings, train the run, report validation MRR per epoch."""

    def __init__(self, *, layers: list[Layer], space: Mapping[str, Dimension],
                 dataset: KGDataset, trials_dir: Path, base: LinkConfig) -> None:
        self.layers, self.space, self.dataset = layers, space, dataset
        self.trials_dir, self.base = trials_dir, base
        self.fixed = {k for layer in layers for k in layer.values}

    def __call__(self, trial: Any) -> float:
        optuna = require_optuna()
        params = {name: dim.suggest(trial, name) for name, dim in self.space.items()}
        if trial.number == 0:  # make_sampler's first: the plain command's settings
            trial.set_user_attr("baseline", True)
        # the image (and the kernel that must fit it) follows a drawn vector size
        values = follow_dim(params, self.base, self.fixed)
        rel = f"trials/{trial.number}"
        trial.set_user_attr("run_dir", rel)
        values["output_dir"] = str(self.trials_dir / str(trial.number))
        layer = Layer("tune", values, f"trial {trial.number}")

        def report(row: dict[str, Any]) -> None:
            value = row.get("valid_mrr")
            if value is None:
                return
            trial.report(float(value), int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {row['epoch']}: validation MRR {value:.4f}")

        try:
            metrics = train_trial([*self.layers, layer], dataset=self.dataset,
                                  callbacks=[report])
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:  # not a result: a resumed study runs another trial
            trial.set_user_attr("error", "interrupted (Ctrl-C)")
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        trial.set_user_attr("best_epoch", metrics["best_epoch"])
        trial.set_user_attr("epochs_run", metrics["epochs_run"])
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        return float(metrics["valid"]["mrr"])


class _FailureGuard:
    """Stops the worker after ``limit`` trials in a row failed."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.last = limit, 0, ""

    def __call__(self, study: Any, trial: Any) -> None:
        if trial.state.name != "FAIL":
            self.streak = 0
            return
        self.streak += 1
        self.last = trial.user_attrs.get("error", "see the log")
        if self.limit and self.streak >= self.limit:
            study.stop()

    @property
    def tripped(self) -> bool:
        return bool(self.limit) and self.streak >= self.limit


def _baseline(config: LinkConfig, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The settings the plain command would train (preset or size-derived), as far as they
    lie in the space: the study's first trial."""
    flat = config.flat()
    return {k: flat[k] for k, dim in space.items() if k in flat and dim.contains(flat[k])}


def run_study(tune: TuneConfig, layers: list[Layer]) -> TuneResult:
    """Runs (or resumes) the search that ``tune`` and the link settings in ``layers``
    describe; returns its best trial after writing the study report
    (:func:`disenkg.hpo.report.finish_study`).

    Raises:
        ConfigError: optuna missing, a bad ``--space`` or storage, a study of the same name
            with other settings.
        UserError: ``max_failures`` trials in a row failed (the last error is named).
    """
    from disenkg.hpo.report import finish_study

    optuna = require_optuna()
    _forbid(layers)
    base, space, layers = resolve_space(layers, tune.space)
    if not space:
        logger.warning("the search space is empty: every trial trains the same settings")
    out = study_dir(base)
    check_writable(out)
    trials_dir = out / "trials"
    trials_dir.mkdir(exist_ok=True)
    dataset = load_dataset(base)
    derived, _ = base.derive(dataset)
    name = tune.study_name or f"{dataset.name}-{base.model_name}"
    storage = _open_storage(tune.storage or f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                load_if_exists=True,
                                sampler=make_sampler(tune.sampler, base.training.seed,
                                                     first=_baseline(derived, space)),
                                pruner=make_pruner(tune.pruner, tune.prune_warmup))
    _check_identity(study, _identity(base, space, dataset), name)
    done = _finished(study)
    if not study.get_trials(deepcopy=False):
        stray = sorted(p.name for p in trials_dir.iterdir())
        if stray:
            raise UserError(f"{trials_dir} already holds trials {stray[:5]} of another study "
                            f"than {name!r} in {tune.storage or out / 'study.db'}",
                            hint="choose another --output-dir, or remove the old trials")
    logger.info("study %s: %d of %d trials finished; space: %s", name, done, tune.trials,
                ", ".join(space) or "(empty)")
    guard = _FailureGuard(tune.max_failures)
    remaining = tune.trials - done
    interrupted = False
    try:
        if remaining > 0:
            objective = _Objective(layers=layers, space=space, dataset=dataset,
                                   trials_dir=trials_dir, base=base)
            study.optimize(objective, n_trials=remaining,
                           timeout=None if tune.timeout is None else tune.timeout * 60,
                           catch=(Exception,), gc_after_trial=True,
                           callbacks=[_TrialLimit(tune.trials), guard])
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        result = finish_study(study, out, test=not interrupted)
    if guard.tripped:
        raise UserError(f"{guard.streak} trials in a row failed; the last: {guard.last}",
                        hint=f"see {out / 'trials.tsv'}; --max-failures 0 never stops")
    return result
