"""``python -m disenkg.run link``: train and evaluate a link-prediction model.

The flags are generated from the configuration tree (:mod:`disenkg.pipeline.config`): one
flag per setting, named after it; a ``--config`` TOML file sets the same settings by name,
and flags override it. The run directory (``--output-dir``, default
``runs/DATASET-MODEL``) is checked before any data is read; it receives the resolved
configuration with each setting's source, the names and id triples of the dataset,
``history.csv``, ``last.pt`` / ``best.pt`` and ``metrics.json`` (:mod:`disenkg.runs.rundir`).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from disenkg.cli.common import format_table, logging_context, make_parser
from disenkg.cli.values import argtype
from disenkg.config.options import Option
from disenkg.config.toml import read_toml
from disenkg.models.registry import MODELS
from disenkg.pipeline.config import DEFAULT_MODEL, Layer, LinkConfig, all_options
from disenkg.pipeline.run import default_output_dir, env_rank, prepare_run, train_link
from disenkg.pipeline.search import train_searched
from disenkg.presets import preset_names
from disenkg.runs.rundir import RunDir

__all__ = ["add_option", "build_parser", "default_output_dir", "layers_from_argv",
           "layers_from_parsed", "main", "resolve_args"]

logger = logging.getLogger(__name__)

#: the order of the ``--help`` groups
GROUPS = ("run", "training", "convolutional scorers (ConvE, InteractE)", "DisenKGAT")


def add_option(group: argparse._ArgumentGroup, opt: Option) -> None:
    """The flag of one setting (its rule as the type, its choices, its default in the
    help); ``dest`` is the setting's name and an absent flag leaves it unset."""
    help_text = opt.help
    if opt.name == "preset":
        help_text += " (presets: " + ", ".join(preset_names()) + ")"
    if opt.default is not None and "default:" not in help_text:
        help_text += f" (default: {opt.default})"
    kw: dict[str, Any] = dict(dest=opt.name, default=argparse.SUPPRESS, help=help_text)
    if opt.is_bool:
        kw["action"] = argparse.BooleanOptionalAction if opt.negatable else "store_true"
    else:
        kw["type"] = str.upper if opt.name == "log_level" else argtype(opt.rule)
        if opt.choices is not None:
            kw["choices"] = opt.choices
            kw["type"] = str.upper if opt.name == "log_level" else None
        if opt.metavar:
            kw["metavar"] = opt.metavar
    group.add_argument(opt.flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``link``: ``--config``, ``--print-config``, ``--model`` and one flag per
    setting of :func:`~disenkg.pipeline.config.all_options`."""
    p = make_parser(
        "python -m disenkg.run link",
        "Train a link-prediction model with 1-N BCE, early stopping on validation MRR, and "
        "report filtered MRR / MR / Hits@k on valid and test in both directions. Writes a run "
        "directory (config, names, history.csv, checkpoints, metrics.json) that the predict, "
        "score, evaluate, export, inspect and plot commands read. Precedence of a setting: "
        "its default < a rule from the KG's size < the dataset's preset < --config < a flag.")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    g = groups["run"]
    g.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file whose keys are setting names; flags given here override it")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved settings (derived from the KG where needed) with "
                        "where each came from, as TOML, and exit without training")
    g.add_argument("--model", default=argparse.SUPPRESS, choices=MODELS.names(),
                   help="model to train: " + "; ".join(
                       f"{n} = {MODELS.get(n).help}" for n in MODELS.names())
                   + f" (default: {DEFAULT_MODEL})")
    for opt in all_options():
        add_option(groups.get(opt.group, g), opt)
    return p


def layers_from_argv(argv: list[str]) -> tuple[list[Layer], argparse.Namespace]:
    """The configuration layers the command line gives: the ``--config`` file's keys, then
    the flags given (with ``argparse``'s one-line errors for bad flags)."""
    ns = build_parser().parse_args(argv)
    return layers_from_parsed(ns), ns


def layers_from_parsed(ns: argparse.Namespace) -> list[Layer]:
    """The layers of parsed flags: the ``--config`` file's keys, then the flags given."""
    given = {k: v for k, v in vars(ns).items()
             if k not in ("config", "print_config", "print_space")}
    layers = []
    if ns.config:
        layers.append(Layer("config", read_toml(ns.config), str(ns.config)))
    layers.append(Layer("flag", given, "command line"))
    return layers


def resolve_args(argv: list[str]) -> tuple[LinkConfig, RunDir]:
    """Parses and validates every flag and config key, applies a resumed run's saved
    config, and checks the run directory; reads no data."""
    layers, _ = layers_from_argv(argv)
    return prepare_run(layers)


def print_config(argv: list[str]) -> LinkConfig:
    """``--print-config``: the resolved settings, derived from the KG where needed."""
    from disenkg.datasets import KGDataset

    layers, _ = layers_from_argv(argv)
    config = LinkConfig.resolve(layers)
    data = config.data
    dataset = KGDataset.load(data.dataset, data_dir=data.data_dir,
                             max_archive_bytes=data.max_archive_mb << 20
                             if data.max_archive_mb else None)
    config, _ = config.derive(dataset)
    print(config.to_toml())
    return config


def main(argv: list[str] | None = None) -> dict:
    argv = list(argv) if argv is not None else []
    if "--print-config" in argv:
        with logging_context("WARNING"):
            print_config([a for a in argv if a != "--print-config"])
        return {}
    layers, _ = layers_from_argv(argv)
    config, run_dir = prepare_run(layers)
    if env_rank() != 0:  # other ranks of a torchrun job: warnings and errors only
        with logging_context("WARNING"):
            return train_link(config, run_dir)
    print(f"run directory: {run_dir.path}" + (" (resuming)" if config.run.resume else ""))
    print(f"preset: {config.run.preset or 'none (defaults derived from the KG size are logged)'}")
    with logging_context(config.run.log_level):
        metrics = train_searched(layers, config, run_dir)
    print(f"\n{metrics['dataset']} / {config.model_name}: best epoch {metrics['best_epoch']} of "
          f"{metrics['epochs_run']}, {metrics['train_seconds']:.1f} s training")
    print(format_table(metrics))
    print(f"metrics written to {run_dir.file('metrics.json')}")
    logger.debug("metrics: %s", json.dumps(metrics["test"]))
    return metrics

