"""A node-level run from configuration to metrics: the configuration (the run section and
the task's section, :mod:`disenkg.training.node_config`), and one trainer that repeats the
task's fit over seeds, writes ``history.csv``, ``best-seed{S}.pt`` and ``metrics.json``.

Each task is a :class:`NodeTask` in :data:`NODE_TASKS`: its configuration class, how it
loads its data, fits one seed, and summarises the seeds. The command line
(``python -m disenkg.run node``) and :func:`disenkg.api.train_node` are translations onto
:func:`prepare_node` and :func:`train_node`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disenkg.config.options import Option, Section, check_value, iter_options
from disenkg.errors import ConfigError
from disenkg.pipeline.config import Layer, unknown_keys_error, where_of
from disenkg.runs.rundir import RunDir
from disenkg.training.node_config import (
    ArrayTaskConfig,
    ClassificationConfig,
    NodeRunConfig,
    VGAEConfig,
)
from disenkg.utils import Registry
from disenkg.utils.device import pick_device
from disenkg.utils.io import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "NODE_TASKS", "NodeConfig", "NodeTask", "node_options",
           "prepare_node", "train_node"]

logger = logging.getLogger(__name__)

#: columns of a node run's ``history.csv`` (``graph``: array task, graph model or baseline)
HISTORY_COLUMNS = ("seed", "epoch", "loss", "valid_loss", "valid_metric", "valid_ap",
                   "graph")


@dataclass(frozen=True)
class NodeTask:
    """A node task: its configuration class, ``load(cfg) -> data`` (and a name for the
    default run directory), ``fit(data, cfg, seed, ctx) -> row(s)`` and
    ``summarise(rows, data, cfg) -> (metrics, message)``."""

    config: type[Section]
    load: Callable[[Any], tuple[Any, str]]
    fit: Callable[..., dict[str, Any]]
    summarise: Callable[[list[dict[str, Any]], Any, Any], tuple[dict[str, Any], str]]


NODE_TASKS: Registry[NodeTask] = Registry("node task")


@dataclass(frozen=True)
class NodeConfig:
    """A node run's configuration: the run section, the task's section and each setting's
    source (``default``, ``config``, ``flag``, ``api``)."""

    run: NodeRunConfig = field(default_factory=NodeRunConfig)
    task: Section = field(default_factory=ClassificationConfig)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def flat(self) -> dict[str, Any]:
        return {**self.run.values(), **self.task.recorded()}


def node_options() -> list[Option]:
    """Every setting of the node command once (``--help`` order)."""
    sections = [NodeRunConfig] + [NODE_TASKS.get(n).config for n in NODE_TASKS.names()]
    return [opt for _, opt in iter_options(sections)]


def task_defaults(name: str) -> dict[str, Any]:
    """``{task: default}`` of a setting whose default differs between tasks."""
    out = {}
    for task in NODE_TASKS.names():
        for o in NODE_TASKS.get(task).config.options():
            if o.name == name:
                out[task] = o.default
    return out


def resolve_node(layers: Iterable[Layer]) -> NodeConfig:
    """The node configuration from ``layers`` (lowest precedence first) over the
    defaults; a setting of another task given by a flag or an argument is an error, one
    from a config file is dropped with a warning."""
    table = {o.name: o for o in node_options()}
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        unknown = [k for k in layer.values if k not in table]
        if unknown:
            raise unknown_keys_error(unknown, layer.where or "disenkg.train_node", table)
        for key, value in layer.values.items():
            merged[key] = value if value is None else check_value(table[key], value,
                                                                 where_of(layer, key))
            sources[key] = layer.source
    task = merged.get("task", NodeRunConfig().task)
    cls = NODE_TASKS.get(task).config
    own = set(NodeRunConfig.option_names()) | set(cls.option_names())
    for key in [k for k in merged if k not in own]:
        if sources[key] in ("flag", "api"):
            flag = "--" + key.replace("_", "-") if sources[key] == "flag" else key
            raise ConfigError(f"{flag} does not apply to --task {task}",
                              hint="drop it, or choose the task it belongs to")
        logger.warning("%s = %r does not apply to --task %s; ignored", key, merged[key], task)
        del merged[key], sources[key]
    config = NodeConfig(run=NodeRunConfig.from_values(merged), task=cls.from_values(merged))
    return dataclasses.replace(config, sources={k: sources.get(k, "default")
                                                for k in config.flat()})


def prepare_node(layers: Iterable[Layer]) -> tuple[NodeConfig, RunDir]:
    """Resolves the configuration, checks what needs no data, prepares the run
    directory."""
    config = resolve_node(layers)
    if isinstance(config.task, ArrayTaskConfig):
        missing = [f for f in ("features", "edges", "targets")
                   if not getattr(config.task, f)]
        if missing:
            raise ConfigError(f"--task array needs --{' --'.join(missing)}")
        name = Path(config.task.features).stem
    else:
        name = config.task.dataset
    run_dir = RunDir(Path(config.run.output_dir or f"runs/node-{config.run.task}-{name}"))
    run_dir.prepare(overwrite=config.run.overwrite)
    return config, run_dir


def _summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    vals = [r[key] for r in rows]
    return {f"{key}_mean": statistics.fmean(vals),
            f"{key}_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def train_node(config: NodeConfig, run_dir: RunDir) -> dict[str, Any]:
    """Repeats the task over seeds ``0..seeds-1``; writes the run directory; returns the
    metrics (per seed, mean and std)."""
    run, cfg = config.run, config.task
    task = NODE_TASKS.get(run.task)
    device = pick_device(run.device)
    out = run_dir.path
    flat = config.flat()
    t0 = time.perf_counter()
    data, _ = task.load(cfg)
    if run.overwrite:
        run_dir.replace_previous()  # only now: the data has been read and checked
    run_dir.write_config({"task": f"node-{run.task}", "args": flat,
                          "sources": dict(config.sources)})
    history: list[dict[str, Any]] = []
    rows: list[Any] = []
    try:
        for seed in range(run.seeds):
            rows.append(task.fit(data, cfg, seed=seed, device=device,
                                 progress=not run.no_progress, history=history,
                                 checkpoint=out / f"best-seed{seed}.pt"))
            run_dir.write_history(history, HISTORY_COLUMNS)
    finally:
        run_dir.unlock()
    metrics: dict[str, Any] = {"task": run.task, "config": flat}
    summary, message = task.summarise(rows, data, cfg)
    metrics.update(summary)
    print(message)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(json.dumps(metrics, indent=2, default=str) + "\n", out / "metrics.json")
    print(f"metrics written to {out / 'metrics.json'}")
    return metrics


# ---------------------------------------------------------------- the tasks
def _load_planetoid(cfg: Any) -> tuple[Any, str]:
    from disenkg.datasets.planetoid import load_planetoid

    # GAT preprocessing (row-normalised features) for classification; the VGAE paper feeds
    # the raw binary features
    return load_planetoid(cfg.dataset, cfg.root,
                          normalize_features=isinstance(cfg, ClassificationConfig)), cfg.dataset


def _fit_classification(data: Any, cfg: ClassificationConfig, **kw: Any) -> dict[str, Any]:
    from disenkg.training.node import run_classification

    return run_classification(data, cfg, **kw)


def _sum_classification(rows, data, cfg) -> tuple[dict[str, Any], str]:
    m = {"dataset": cfg.dataset, "encoder": cfg.encoder, "seeds": rows,
         **_summary(rows, "test_acc")}
    return m, (f"{cfg.dataset} {cfg.encoder}: test accuracy {100 * m['test_acc_mean']:.2f} "
               f"+/- {100 * m['test_acc_std']:.2f} % over {len(rows)} seeds")


def _fit_vgae(data: Any, cfg: VGAEConfig, **kw: Any) -> dict[str, Any]:
    from disenkg.training.node import run_vgae

    return run_vgae(data, cfg, **kw)


def _sum_vgae(rows, data, cfg) -> tuple[dict[str, Any], str]:
    m = {"dataset": cfg.dataset, "encoder": "variational_gat", "recon": cfg.recon,
         "seeds": rows, **_summary(rows, "auc"), **_summary(rows, "ap")}
    return m, (f"{cfg.dataset} VGAE (variational GAT, {cfg.recon} reconstruction): AUC "
               f"{100 * m['auc_mean']:.2f} +/- {100 * m['auc_std']:.2f}, AP "
               f"{100 * m['ap_mean']:.2f} +/- {100 * m['ap_std']:.2f} over {len(rows)} seeds")


def _load_arrays(cfg: ArrayTaskConfig) -> tuple[Any, str]:
    from disenkg.datasets.arrays import ArrayDataset, load_edges

    ds = ArrayDataset(features=cfg.features, targets=cfg.targets, target_kind=cfg.target_kind)
    return (ds, load_edges(cfg.edges, ds.num_nodes)), Path(cfg.features).stem


def _fit_array(data: Any, cfg: ArrayTaskConfig, *, checkpoint: Path, **kw: Any
               ) -> dict[str, Any]:
    from disenkg.training.node import run_array

    ds, edges = data
    graph = run_array(ds, edges, cfg, use_graph=True, checkpoint=checkpoint, **kw)
    base = run_array(ds, edges, cfg, use_graph=False, **kw)
    return {"graph": graph, "baseline": base}


def _sum_array(rows, data, cfg) -> tuple[dict[str, Any], str]:
    ds, _ = data
    graph, base = [r["graph"] for r in rows], [r["baseline"] for r in rows]
    key = "test_accuracy" if cfg.target_kind == "classification" else "test_mse"
    m = {"shape": list(ds.shape), "seeds": graph, **_summary(graph, key),
         "baseline": {"model": "mlp (no graph)", "seeds": base, **_summary(base, key)}}
    if cfg.target_kind == "regression":
        m.update(_summary(graph, "test_mae"))
        m["baseline"].update(_summary(base, "test_mae"))
    return m, (f"array {ds.shape}: {key} graph model {m[key + '_mean']:.4f}, no-graph MLP "
               f"{m['baseline'][key + '_mean']:.4f}")


NODE_TASKS.register("classification")(NodeTask(ClassificationConfig, _load_planetoid,
                                                _fit_classification, _sum_classification))
NODE_TASKS.register("link")(NodeTask(VGAEConfig, _load_planetoid, _fit_vgae, _sum_vgae))
NODE_TASKS.register("array")(NodeTask(ArrayTaskConfig, _load_arrays, _fit_array, _sum_array))
