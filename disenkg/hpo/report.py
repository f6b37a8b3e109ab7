"""The report a search leaves in its directory, rewritten whenever a worker stops.

=========================  ================================================================
``trials.tsv``             one row per trial: number, state, validation MRR, epochs, seconds,
                           its settings, its error (failed trials), its run directory
``best``                   a link to the best trial's run directory (``trials/NUMBER``)
``best.toml``              the best configuration, a file ``python -m disenkg.run --config``
                           accepts (every setting, each with where it came from)
``optimization_history``   ``.png``: validation MRR per trial and the best so far
``param_importances``      ``.png``: how much each setting explains of the MRR (PED-ANOVA);
                           both plots with the ``plot`` extra (matplotlib)
=========================  ================================================================

The best trial (highest validation MRR among completed trials) is evaluated on the test
split once, here; its ``metrics.json`` gains ``test``. No other trial is tested.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.utils.io import atomic_write_text

__all__ = ["finish_study", "trials_table", "write_best_toml"]

logger = logging.getLogger(__name__)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def trials_table(study: Any) -> str:
    """The trials as TSV (header first, one row per trial in number order)."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    params = sorted({p for t in trials for p in t.params})
    cols = ["number", "state", "valid_mrr", "best_epoch", "epochs_run", "seconds",
            "baseline", *params, "error", "run_dir"]
    rows = ["\t".join(cols)]
    for t in trials:
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if (
            t.datetime_complete and t.datetime_start) else None
        u = t.user_attrs
        cells = [t.number, t.state.name, t.value, u.get("best_epoch"), u.get("epochs_run"),
                 None if secs is None else round(secs, 1), bool(u.get("baseline", False)),
                 *(t.params.get(p) for p in params), u.get("error"), u.get("run_dir")]
        rows.append("\t".join(_cell(c) for c in cells))
    return "\n".join(rows) + "\n"


def write_best_toml(run_dir: Path, path: Path, header: str) -> None:
    """The run's configuration as a ``--config`` file (without its output directory)."""
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config = LinkConfig.resolve([Layer("saved", saved["args"], str(run_dir))], preset=False)
    config = config.with_sources(saved.get("sources", {}))
    config = dataclasses.replace(config, run=config.run.replace(output_dir=None))
    atomic_write_text(header + config.to_toml(), path)


def _link_best(out: Path, rel: str) -> None:
    tmp = out / f".best.{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(rel, tmp)
    os.replace(tmp, out / "best")


def _test_best(run_dir: Path) -> dict[str, Any]:
    """The best trial's test metrics (evaluated now unless its metrics.json has them)."""
    from disenkg.runs.trained import load_run

    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if "test" not in metrics:
        logger.info("evaluating the best trial (%s) on the test split", run_dir.name)
        metrics["test"] = load_run(run_dir).evaluate("test")
        atomic_write_text(json.dumps(metrics, indent=2) + "\n", path)
    return metrics["test"]


def _plots(study: Any, out: Path, complete: int) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        logger.info("plots skipped: matplotlib is not installed (the 'plot' extra)")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():  # Optuna's plots are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study, target_name="validation MRR")
        ax.figure.savefig(out / "optimization_history.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        searched = {p for t in study.get_trials(deepcopy=False) for p in t.params}
        if complete >= 2 and searched:
            ax = ovm.plot_param_importances(study, target_name="validation MRR")
            ax.figure.savefig(out / "param_importances.png", dpi=120, bbox_inches="tight")
            plt.close(ax.figure)


def finish_study(study: Any, out: Path, *, test: bool = True) -> Any:
    """Writes the report into ``out`` and (``test``) evaluates the best trial on the test
    split; returns the :class:`~disenkg.hpo.study.TuneResult`."""
    from disenkg.hpo.study import TuneResult

    atomic_write_text(trials_table(study), out / "trials.tsv")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        logger.warning("no trial of study %s completed yet", study.study_name)
        return TuneResult(study, out, None, None, None, None)
    best = study.best_trial
    rel = best.user_attrs["run_dir"]
    run_dir = out / rel
    _link_best(out, rel)
    write_best_toml(run_dir, out / "best.toml",
                    f"# best trial {best.number} of study {study.study_name}: validation MRR "
                    f"{best.value:.4f} ({len(complete)} completed trials)\n"
                    f"# train it again with: python -m disenkg.run --config best.toml\n\n")
    tested = _test_best(run_dir) if test else None
    _plots(study, out, len(complete))
    return TuneResult(study, out, best.number, best.value, run_dir, tested)
