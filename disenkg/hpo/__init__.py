"""Hyper-parameter search on Optuna: ``python -m disenkg.run tune`` and
:func:`disenkg.tune`.

:mod:`~disenkg.hpo.config` the search's own settings, :mod:`~disenkg.hpo.space` the
search space read off the configuration classes, :mod:`~disenkg.hpo.study` the study
(storage, sampler, pruner, trials as run directories), :mod:`~disenkg.hpo.report` the
study report (trials table, best configuration, plots). Optuna is an optional extra
(``pip install "disenkg[tune]"``).
"""

from disenkg.hpo.config import TuneConfig
from disenkg.hpo.space import default_space, read_space
from disenkg.hpo.study import TuneResult, run_study

__all__ = ["TuneConfig", "TuneResult", "default_space", "read_space", "run_study"]
