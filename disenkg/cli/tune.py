"""``python -m disenkg.run tune``: a hyper-parameter search on Optuna (:mod:`disenkg.hpo`).

Every flag of ``link`` is accepted and fixes that setting for every trial; the ``search``
group sets the study. The study directory (``--output-dir``, default
``runs/tune-DATASET-MODEL``) holds the SQLite database (unless ``--storage`` names another),
``trials/NUMBER`` run directories, ``best`` and the report (:mod:`disenkg.hpo.report`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from disenkg.cli.common import format_table, logging_context
from disenkg.cli.link import add_option, layers_from_parsed
from disenkg.cli.link import build_parser as link_parser
from disenkg.hpo.config import TuneConfig
from disenkg.models.registry import MODELS
from disenkg.pipeline.config import Layer, LinkConfig

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _space_help() -> str:
    from disenkg.hpo.space import default_space

    lines = ["default search space (settings given as flags or --config keys are fixed "
             "instead; --space FILE.toml changes it; --print-space shows it for your "
             "settings):"]
    for name in MODELS.names():
        space = default_space(LinkConfig.resolve([Layer("flag", {"model": name})],
                                                 preset=False))
        lines.append(f"  {name}: " + "; ".join(f"{k} {d.to_toml()}" for k, d in space.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """``link``'s flags plus the ``search`` group (:class:`~disenkg.hpo.TuneConfig`)."""
    p = link_parser()
    p.prog = "python -m disenkg.run tune"
    p.description = (
        "Search hyper-parameters on Optuna: each trial trains a link run into "
        "OUTPUT_DIR/trials/NUMBER with settings drawn from the search space, reports its "
        "validation MRR per epoch (a pruner stops bad trials) and is scored by its best "
        "validation MRR; the test split is evaluated for the best trial only. Re-running the "
        "same command resumes the study; the same --storage and --study-name on several "
        "processes or machines share it. Needs the 'tune' extra (optuna).")
    p.epilog = _space_help()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("search")
    for opt in TuneConfig.options():
        add_option(g, opt)
    g.add_argument("--print-space", action="store_true",
                   help="print the search space for these settings in the --space file's form "
                        "and exit")
    return p


def split_args(argv: list[str]) -> tuple[TuneConfig, list[Any], argparse.Namespace]:
    """The search's settings and the trials' configuration layers from ``argv``."""
    ns = build_parser().parse_args(argv)
    names = set(TuneConfig.option_names())
    tune = {k: getattr(ns, k) for k in names if hasattr(ns, k)}
    for k in tune:
        delattr(ns, k)
    return TuneConfig(**tune), layers_from_parsed(ns), ns


def print_space(tune: TuneConfig, layers: list[Any]) -> str:
    from disenkg.hpo.space import resolve_space, space_to_toml

    base, space, _ = resolve_space(layers, tune.space)
    text = f"# search space of --model {base.model_name}\n" + space_to_toml(space)
    print(text, end="")
    return text


def main(argv: list[str] | None = None) -> Any:
    from disenkg.hpo.study import require_optuna, run_study

    tune, layers, ns = split_args(list(argv or []))
    if ns.print_space:
        return print_space(tune, layers)
    level = str(getattr(ns, "log_level", "INFO"))
    optuna = require_optuna()
    optuna.logging.disable_default_handler()  # Optuna's lines in the package's log format
    optuna.logging.enable_propagation()
    with logging_context(level):
        try:
            result = run_study(tune, layers)
        except KeyboardInterrupt:
            print("\ninterrupted: the running trial is recorded as failed; run the same "
                  "command again to resume the study")
            raise SystemExit(130) from None
    counts = result.counts()
    print(f"\nstudy {result.study.study_name} in {result.output_dir}: "
          + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())))
    if result.best_number is None:
        print("no trial completed")
        return result
    print(f"best trial {result.best_number}: validation MRR {result.best_value:.4f} "
          f"({result.best_run_dir}; also {result.output_dir / 'best'})")
    if result.best_test is not None:
        print(format_table({"test": result.best_test}, splits=("test",)))
    print(f"best configuration: {result.output_dir / 'best.toml'}; all trials: "
          f"{result.output_dir / 'trials.tsv'}")
    return result
