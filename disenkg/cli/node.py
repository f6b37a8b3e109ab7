"""``python -m disenkg.run node``: node classification, VGAE link prediction, array tasks."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from disenkg.cli.common import apply_config, pick_device, setup_logging
from disenkg.utils.io import atomic_write_text

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m disenkg.run node",
        description="Node-level tasks with the GAT / MLP / variational GAT encoders. Repeats "
                    "over seeds 0..N-1 and writes OUTPUT_DIR/metrics.json with per-seed "
                    "values and their mean and std.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.toml", help="TOML file of flag values (flags win)")
    g.add_argument("--task", default="classification",
                   choices=["classification", "link", "array"],
                   help="classification: Planetoid node labels; link: VGAE with the "
                        "variational GAT; array: (G, S, T, N, F) arrays with a node graph")
    g.add_argument("--dataset", default="Cora", help="Planetoid name (Cora, CiteSeer, PubMed)")
    g.add_argument("--root", default=None,
                   help="folder holding NAME/raw/ind.name.* (default: $DISENKG_DATA/planetoid,"
                        " then the repo's data/planetoid)")
    g.add_argument("--encoder", default="gat", choices=["gat", "mlp"],
                   help="classification encoder (mlp = no-graph baseline)")
    g.add_argument("--seeds", type=int, default=10, help="repeat over seeds 0..N-1")
    g.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: 1000 classification, 400 link, 20 array)")
    g.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: 0.005 classification, 0.01 link, "
                        "0.003 array)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay "
                   "(classification)")
    g.add_argument("--patience", type=int, default=100,
                   help="early stopping patience in epochs (classification, link)")
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument("--output-dir", default=None, help="default: runs/node-TASK-DATASET")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--log-level", default="INFO", help="logging level")
    a = p.add_argument_group("array task")
    a.add_argument("--features", help="features .npy of shape (G, S, T, N, F)")
    a.add_argument("--edges", help="node graph: .npy (2, E) / (E, 2) or .csv with src,dst")
    a.add_argument("--targets", help="targets .npy of shape (G, S, N) or (G, S)")
    a.add_argument("--target-kind", default="regression", choices=["regression",
                   "classification"], help="what the targets are")
    a.add_argument("--max-samples", type=int, default=None,
                   help="train/valid/test on a random subset of this many (g, s) samples")
    a.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    a.add_argument("--latent", type=int, default=32, help="latent size of the encoders")
    return p


def _summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    vals = [r[key] for r in rows]
    return {f"{key}_mean": statistics.fmean(vals),
            f"{key}_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from disenkg.training.node import NodeConfig, run_array, run_classification, run_vgae

    args = apply_config(build_parser(), list(argv) if argv is not None else [])
    setup_logging(args.log_level)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    device = pick_device(args.device)
    out = Path(args.output_dir or f"runs/node-{args.task}-{args.dataset}")
    t0 = time.perf_counter()
    seeds = range(args.seeds)
    metrics: dict[str, Any] = {"task": args.task, "config": vars(args)}
    if args.task in ("classification", "link"):
        from disenkg.datasets.planetoid import load_planetoid

        data = load_planetoid(args.dataset, args.root)
        metrics["dataset"] = args.dataset
        if args.task == "classification":
            cfg = NodeConfig(epochs=args.epochs or 1000, lr=args.lr or 0.005,
                             weight_decay=args.weight_decay, patience=args.patience,
                             progress=not args.no_progress)
            rows = [run_classification(data, encoder=args.encoder, seed=s, cfg=cfg,
                                       device=device) for s in seeds]
            metrics.update(encoder=args.encoder, seeds=rows, **_summary(rows, "test_acc"))
            print(f"{args.dataset} {args.encoder}: test accuracy "
                  f"{100 * metrics['test_acc_mean']:.2f} +/- {100 * metrics['test_acc_std']:.2f}"
                  f" % over {args.seeds} seeds")
        else:
            cfg = NodeConfig(epochs=args.epochs or 400, lr=args.lr or 0.01,
                             patience=args.patience, progress=not args.no_progress)
            rows = [run_vgae(data, seed=s, cfg=cfg, device=device) for s in seeds]
            metrics.update(encoder="variational_gat", seeds=rows, **_summary(rows, "auc"),
                           **_summary(rows, "ap"))
            print(f"{args.dataset} VGAE (variational GAT): AUC {100 * metrics['auc_mean']:.2f}"
                  f" +/- {100 * metrics['auc_std']:.2f}, AP {100 * metrics['ap_mean']:.2f} +/- "
                  f"{100 * metrics['ap_std']:.2f} over {args.seeds} seeds")
    else:
        from disenkg.datasets.arrays import ArrayDataset, load_edges

        missing = [f for f in ("features", "edges", "targets") if not getattr(args, f)]
        if missing:
            raise SystemExit(f"--task array needs --{' --'.join(missing)}")
        ds = ArrayDataset(features=args.features, targets=args.targets,
                          target_kind=args.target_kind)
        edges = load_edges(args.edges, ds.num_nodes)
        common = dict(epochs=args.epochs or 20, batch_size=args.batch_size,
                      max_samples=args.max_samples, lr=args.lr or 0.003, device=device,
                      progress=not args.no_progress)
        rows = [run_array(ds, edges, seed=s, use_graph=True, **common) for s in seeds]
        base = [run_array(ds, edges, seed=s, use_graph=False, **common) for s in seeds]
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
