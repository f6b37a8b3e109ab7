"""``python -m disenkg.run node``: node classification, VGAE link prediction, array tasks.

Writes a run directory like the link task: ``config.json``, ``history.csv`` (one row per
seed and epoch), ``best-seed{S}.pt`` (the kept model of each seed; for the array task the
graph model) and ``metrics.json``. The directory is checked before any data is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from disenkg.cli.common import (
    add_common_arguments,
    logging_context,
    make_parser,
    parse_with_config,
    pick_device,
)
from disenkg.cli.values import integer, nonneg_float, pos_float
from disenkg.errors import ConfigError
from disenkg.runs.rundir import RunDir
from disenkg.training.node import NODE_ENCODERS
from disenkg.utils.io import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "build_parser", "main"]

logger = logging.getLogger(__name__)

#: columns of a node run's ``history.csv`` (``graph``: array task, graph model or baseline)
HISTORY_COLUMNS = ("seed", "epoch", "loss", "valid_loss", "valid_metric", "valid_ap",
                   "graph")
#: per-task defaults of flags left unset
TASK_DEFAULTS = {"classification": {"epochs": 1000, "lr": 0.005},
                 "link": {"epochs": 1000, "lr": 0.002},
                 "array": {"epochs": 20, "lr": 0.003}}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m disenkg.run node",
        "Node-level tasks with the GAT / MLP / variational GAT encoders. Repeats over seeds "
        "0..N-1 and writes a run directory: config.json, history.csv, best-seed{S}.pt and "
        "metrics.json with per-seed values and their mean and std.")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.toml", help="TOML file of flag values (flags win)")
    g.add_argument("--task", default="classification",
                   choices=["classification", "link", "array"],
                   help="classification: Planetoid node labels; link: VGAE with the "
                        "variational GAT; array: (G, S, T, N, F) arrays with a node graph")
    g.add_argument("--dataset", default="Cora", help="Planetoid name (Cora, CiteSeer, PubMed)")
    g.add_argument("--root", default=None,
                   help="folder holding NAME/raw/ind.name.* (default: $DISENKG_DATA/planetoid,"
                        " then the bundled disenkg/data/planetoid)")
    g.add_argument("--encoder", default="gat", choices=NODE_ENCODERS.names(),
                   help="classification encoder: " + "; ".join(
                       f"{n} = {NODE_ENCODERS.get(n).description}"
                       for n in NODE_ENCODERS.names()))
    g.add_argument("--recon", default="full", choices=["sampled", "full"],
                   help="link task: VGAE reconstruction loss; full = the paper's exact "
                        "all-pairs BCE through the fused op (memory linear in nodes), sampled "
                        "= PyG's one-negative-per-edge estimator")
    g.add_argument("--select", default="auc+ap", choices=["auc", "auc+ap"],
                   help="link task: the validation score that picks the checkpoint and "
                        "drives early stopping")
    g.add_argument("--seeds", type=integer(1), default=10, help="repeat over seeds 0..N-1")
    g.add_argument("--epochs", type=integer(1), default=None,
                   help="maximum epochs (default: 1000 classification and link, 20 array)")
    g.add_argument("--lr", type=pos_float, default=None,
                   help="Adam learning rate (default: 0.005 classification, 0.002 link (chosen "
                        "by validation AUC on Cora), 0.003 array)")
    g.add_argument("--weight-decay", type=nonneg_float, default=5e-4,
                   help="Adam weight decay (classification)")
    g.add_argument("--patience", type=integer(1), default=100,
                   help="early stopping patience in epochs (classification, link)")
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument("--output-dir", default=None,
                   help="the run directory (default: runs/node-TASK-DATASET); refused if it "
                        "already holds a run, unless --overwrite")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the run files already in OUTPUT_DIR and start afresh")
    add_common_arguments(g)
    a = p.add_argument_group("array task")
    a.add_argument("--features", help="features .npy of shape (G, S, T, N, F)")
    a.add_argument("--edges", help="node graph: .npy (2, E) / (E, 2) or .csv with src,dst")
    a.add_argument("--targets", help="targets .npy of shape (G, S, N) or (G, S)")
    a.add_argument("--target-kind", default="regression", choices=["regression",
                   "classification"], help="what the targets are")
    a.add_argument("--max-samples", type=integer(3), default=None,
                   help="train/valid/test on a random subset of this many (g, s) samples")
    a.add_argument("--batch-size", type=integer(1), default=32, help="samples per batch")
    a.add_argument("--latent", type=integer(4), default=32,
                   help="latent size of the encoders")
    return p


def _summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    vals = [r[key] for r in rows]
    return {f"{key}_mean": statistics.fmean(vals),
            f"{key}_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def resolve_args(argv: list[str]) -> tuple[argparse.Namespace, RunDir]:
    """Validates every flag and config key, fills task defaults, checks the run directory;
    reads no data."""
    args, _ = parse_with_config(build_parser(), argv)
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.task == "array":
        missing = [f for f in ("features", "edges", "targets") if not getattr(args, f)]
        if missing:
            raise ConfigError(f"--task array needs --{' --'.join(missing)}")
    name = args.dataset if args.task != "array" else Path(args.features).stem
    run_dir = RunDir(Path(args.output_dir or f"runs/node-{args.task}-{name}"))
    run_dir.prepare(overwrite=args.overwrite)
    return args, run_dir


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run_dir = resolve_args(list(argv) if argv is not None else [])
    print(f"run directory: {run_dir.path}")
    with logging_context(args.log_level):
        return _run(args, run_dir)


def _run(args: argparse.Namespace, run_dir: RunDir) -> dict[str, Any]:
    from disenkg.training.node import NodeConfig, run_array, run_classification, run_vgae

    device = pick_device(args.device)
    out = run_dir.path
    config = {k: v for k, v in vars(args).items() if k != "config"}
    run_dir.write_config({"task": f"node-{args.task}", "args": config})
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    seeds = range(args.seeds)
    metrics: dict[str, Any] = {"task": args.task, "config": config}

    def ckpt(s: int) -> Path:
        return out / f"best-seed{s}.pt"

    def done_seed() -> None:
        run_dir.write_history(history, HISTORY_COLUMNS)

    if args.task in ("classification", "link"):
        from disenkg.datasets.planetoid import load_planetoid

        # GAT preprocessing (row-normalised features) for classification; the VGAE paper
        # feeds the raw binary features
        data = load_planetoid(args.dataset, args.root,
                              normalize_features=args.task == "classification")
        metrics["dataset"] = args.dataset
        rows = []
        if args.task == "classification":
            cfg = NodeConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                             patience=args.patience, progress=not args.no_progress)
            for s in seeds:
                rows.append(run_classification(data, encoder=args.encoder, seed=s, cfg=cfg,
                                               device=device, history=history,
                                               checkpoint=ckpt(s)))
                done_seed()
            metrics.update(encoder=args.encoder, seeds=rows, **_summary(rows, "test_acc"))
            print(f"{args.dataset} {args.encoder}: test accuracy "
                  f"{100 * metrics['test_acc_mean']:.2f} +/- {100 * metrics['test_acc_std']:.2f}"
                  f" % over {args.seeds} seeds")
        else:
            cfg = NodeConfig(epochs=args.epochs, lr=args.lr, patience=args.patience,
                             progress=not args.no_progress)
            for s in seeds:
                rows.append(run_vgae(data, seed=s, cfg=cfg, device=device, history=history,
                                     checkpoint=ckpt(s), recon=args.recon,
                                     select=args.select))
                done_seed()
            metrics.update(encoder="variational_gat", recon=args.recon, seeds=rows,
                           **_summary(rows, "auc"),
                           **_summary(rows, "ap"))
            print(f"{args.dataset} VGAE (variational GAT, {args.recon} reconstruction): AUC "
                  f"{100 * metrics['auc_mean']:.2f}"
                  f" +/- {100 * metrics['auc_std']:.2f}, AP {100 * metrics['ap_mean']:.2f} +/- "
                  f"{100 * metrics['ap_std']:.2f} over {args.seeds} seeds")
    else:
        from disenkg.datasets.arrays import ArrayDataset, load_edges

        ds = ArrayDataset(features=args.features, targets=args.targets,
                          target_kind=args.target_kind)
        edges = load_edges(args.edges, ds.num_nodes)
        common = dict(epochs=args.epochs, batch_size=args.batch_size,
                      max_samples=args.max_samples, lr=args.lr, device=device,
                      progress=not args.no_progress, history=history)
        rows, base = [], []
        for s in seeds:
            rows.append(run_array(ds, edges, seed=s, use_graph=True, checkpoint=ckpt(s),
                                  **common))
            base.append(run_array(ds, edges, seed=s, use_graph=False, **common))
            done_seed()
        key = "test_accuracy" if args.target_kind == "classification" else "test_mse"
        metrics.update(shape=list(ds.shape), seeds=rows, **_summary(rows, key),
                       baseline={"model": "mlp (no graph)", "seeds": base,
                                 **_summary(base, key)})
        if args.target_kind == "regression":
            metrics.update(_summary(rows, "test_mae"))
            metrics["baseline"].update(_summary(base, "test_mae"))
        print(f"array {ds.shape}: {key} graph model {metrics[key + '_mean']:.4f}, no-graph "
              f"MLP {metrics['baseline'][key + '_mean']:.4f}")
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(json.dumps(metrics, indent=2, default=str) + "\n", out / "metrics.json")
    print(f"metrics written to {out / 'metrics.json'}")
    return metrics
