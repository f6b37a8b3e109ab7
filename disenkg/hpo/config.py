"""The settings of a search itself (``python -m disenkg.run tune --help``, group
``search``); the trials' own settings are a link run's (:mod:`disenkg.pipeline.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from disenkg.config.options import Section, option
from disenkg.config.rules import integer, one_of, pos_float, text

__all__ = ["PRUNERS", "SAMPLERS", "TuneConfig"]

#: ``--pruner`` choices (:func:`disenkg.hpo.study.make_pruner`)
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
#: ``--sampler`` choices (:func:`disenkg.hpo.study.make_sampler`)
SAMPLERS = ("tpe", "random")

G = "search"


@dataclass(frozen=True, kw_only=True)
class TuneConfig(Section):
    """A hyper-parameter search: how many trials, where the study is stored, how trials are
    drawn and stopped early."""

    section = "tune"

    trials: int = option(
        20, integer(1), group=G,
        help="trials the study should have finished (complete, pruned or failed), counted "
             "over every worker and every earlier run of the same study")
    timeout: float | None = option(
        None, pos_float, nullable=True, group=G,
        help="stop starting new trials after this many minutes (this worker)")
    storage: str | None = option(
        None, text, nullable=True, group=G,
        help="Optuna storage URL (SQLAlchemy: sqlite:///FILE, postgresql://..., "
             "mysql://...); the same URL and --study-name on several processes or machines "
             "share one study (default: sqlite:///OUTPUT_DIR/study.db)")
    study_name: str | None = option(
        None, text, nullable=True, group=G,
        help="the study's name in the storage (default: DATASET-MODEL)")
    space: str | None = option(
        None, text, nullable=True, group=G, metavar="FILE.toml",
        help="TOML file overriding the search space: 'name = {low = .., high = .., log = "
             "true}' or 'name = {choices = [..]}' moves a setting in that range, 'name = "
             "VALUE' fixes it, 'name = false' leaves it out of the search (see "
             "--print-space)")
    sampler: str = option("tpe", one_of(SAMPLERS), group=G,
                          help="how trials are drawn: tpe (Bayesian, Optuna's TPE, the first "
                               "trials at random) or random")
    pruner: str = option(
        "median", one_of(PRUNERS), group=G,
        help="stops a trial early when its validation MRR at an epoch is worse than the "
             "other trials' there (median, percentile = the 25th percentile, hyperband, "
             "successive_halving) or never (none)")
    prune_warmup: int = option(
        5, integer(0), group=G,
        help="epochs a trial trains before it can be pruned (and trials finished before "
             "any is pruned: 4)")
    max_failures: int = option(
        5, integer(0), group=G,
        help="stop this worker after this many trials in a row failed (a setting every trial "
             "gets wrong); 0 = never")
