"""``python -m disenkg.run node``: node classification, VGAE link prediction, array tasks.

The flags are generated from the node configuration (:mod:`disenkg.training.node_config`):
the run section and each task's section; a ``--config`` TOML file sets the same settings
by name. Writes a run directory like the link task: ``config.json`` (settings and their
sources), ``history.csv`` (one row per seed and epoch), ``best-seed{S}.pt`` (the kept model
of each seed; for the array task the graph model) and ``metrics.json``. The directory is
checked before any data is read.
"""

from __future__ import annotations

import argparse
from typing import Any

from disenkg.cli.common import logging_context, make_parser
from disenkg.cli.values import argtype
from disenkg.config.toml import read_toml
from disenkg.pipeline.config import Layer
from disenkg.pipeline.node import (
    HISTORY_COLUMNS,
    NodeConfig,
    node_options,
    prepare_node,
    task_defaults,
    train_node,
)
from disenkg.runs.rundir import RunDir
from disenkg.training.node import NODE_ENCODERS

__all__ = ["HISTORY_COLUMNS", "build_parser", "main", "resolve_args"]

GROUPS = ("run", "Planetoid tasks", "training", "array task")


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m disenkg.run node",
        "Node-level tasks with the GAT / MLP / variational GAT encoders. Repeats over seeds "
        "0..N-1 and writes a run directory: config.json, history.csv, best-seed{S}.pt and "
        "metrics.json with per-seed values and their mean and std.")
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    groups["run"].add_argument("--config", metavar="FILE.toml", default=None,
                               help="TOML file of settings (flags win)")
    for opt in node_options():
        help_text = opt.help
        if opt.name == "encoder":
            help_text += ": " + "; ".join(f"{n} = {NODE_ENCODERS.get(n).description}"
                                          for n in NODE_ENCODERS.names())
        per_task = task_defaults(opt.name)
        if len(set(map(str, per_task.values()))) > 1:
            help_text += " (default: " + ", ".join(f"{v} {t}" for t, v in per_task.items()) + ")"
        elif opt.default is not None:
            help_text += f" (default: {opt.default})"
        kw: dict[str, Any] = dict(dest=opt.name, default=argparse.SUPPRESS, help=help_text)
        if opt.is_bool:
            kw["action"] = "store_true"
        elif opt.choices is not None:
            kw["choices"] = opt.choices
            if opt.name == "log_level":
                kw["type"] = str.upper
        else:
            kw["type"] = argtype(opt.rule)
        groups.get(opt.group, groups["run"]).add_argument(opt.flag, **kw)
    return p


def resolve_args(argv: list[str]) -> tuple[NodeConfig, RunDir]:
    """Validates every flag and config key, checks the run directory; reads no data."""
    ns = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if k != "config"}
    layers = []
    if ns.config:
        layers.append(Layer("config", read_toml(ns.config), str(ns.config)))
    layers.append(Layer("flag", given, "command line"))
    return prepare_node(layers)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, run_dir = resolve_args(list(argv) if argv is not None else [])
    print(f"run directory: {run_dir.path}")
    with logging_context(config.run.log_level):
        return train_node(config, run_dir)

