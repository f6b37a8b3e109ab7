"""``python -m disenkg.run link``: train and evaluate a link-prediction model.

The run directory (``--output-dir``, default ``runs/DATASET-MODEL``) is checked before any
data is read; it receives the resolved config, the names and id triples of the dataset,
``history.csv``, ``last.pt`` / ``best.pt`` and ``metrics.json`` (:mod:`disenkg.runs.rundir`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from disenkg.cli.common import (
    add_common_arguments,
    format_table,
    logging_context,
    make_parser,
    parse_with_config,
    pick_device,
    read_config,
)
from disenkg.cli.link_models import (
    MODELS,
    add_model_arguments,
    check_shapes,
    fill_defaults,
    fix_bn0_scale,
)
from disenkg.cli.values import decay, fraction, integer, nonneg_float, pos_float
from disenkg.datasets import KNOWN, KGDataset
from disenkg.defaults import BUDGET_MINUTES
from disenkg.errors import CheckpointError, ConfigError
from disenkg.ops.mixture_bce import IMPLS as LOSS_IMPLS
from disenkg.ops.precision import PRECISIONS
from disenkg.presets import PRESET_MODEL, find_preset, preset_names
from disenkg.runs.resume import merge_for_resume
from disenkg.runs.rundir import RunDir
from disenkg.runs.tracking import check_tracking, make_callbacks
from disenkg.training import LinkTrainer, TrainConfig
from disenkg.training.distributed import init_from_env
from disenkg.training.link import LOSSES
from disenkg.utils import seed_everything

__all__ = ["build_parser", "main", "train_from_args"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "disenkgat"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m disenkg.run link",
        "Train a link-prediction model with 1-N BCE, early stopping on validation MRR, and "
        "report filtered MRR / MR / Hits@k on valid and test in both directions. Writes a run "
        "directory (config, names, history.csv, checkpoints, metrics.json) that the predict, "
        "score, evaluate, export, inspect and plot commands read.")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.toml",
                   help="TOML file whose keys are flag names; flags given here override it")
    g.add_argument("--dataset", default="umls",
                   help="dataset name (FB15k-237, WN18RR, kinship, umls) or a path to a "
                        "directory / .tar.gz / .zip holding train.txt, valid.txt, test.txt")
    g.add_argument("--data-dir", default=None,
                   help="directory searched first for named datasets (then $DISENKG_DATA, "
                        "the bundled UMLS / Kinship, then download into ~/.cache/disenkg)")
    g.add_argument("--max-archive-mb", type=integer(1), default=None,
                   help="largest decompressed size of a dataset archive in MiB (default: "
                        "1024, or 500x the archive's size if smaller, at least 32)")
    g.add_argument("--preset", default="auto",
                   help="configuration preset: 'auto' uses the named dataset's preset ("
                        + ", ".join(preset_names()) + ") for DisenKGAT, 'none' turns "
                        "presets off (size-derived defaults apply), or a preset name; flags "
                        "and --config keys override it")
    g.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS.names(),
                   help="model to train: " + "; ".join(
                       f"{n} = {MODELS.get(n).help}" for n in MODELS.names()))
    g.add_argument("--output-dir", default=None,
                   help="the run directory (default: runs/DATASET-MODEL); refused if it "
                        "already holds a run, unless --resume or --overwrite")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT_DIR from last.pt with its saved config; "
                        "flags may change only epochs, patience, eval-every, device, "
                        "implementations and display")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the run files already in OUTPUT_DIR and start afresh")
    g.add_argument("--seed", type=integer(0), default=0,
                   help="random seed (init, dropout, shuffling)")
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log loss and validation metrics to OUTPUT_DIR/tensorboard "
                        "(needs the 'tracking' extra: pip install tensorboard)")
    add_common_arguments(g)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=integer(1), default=None,
                   help="maximum training epochs (default: the preset's, else as many as "
                        "fit --time-budget, in [20, 500])")
    t.add_argument("--time-budget", type=pos_float, default=BUDGET_MINUTES,
                   help="minutes of training and validation the derived --epochs aim for "
                        "(KGs without a preset; an estimate, not a hard stop)")
    t.add_argument("--batch-size", type=integer(1), default=None,
                   help="1-N queries per step (default: the preset's, else the largest "
                        "power of two giving >= 24 steps per epoch, in [32, 2048], at "
                        "least 128 from 1024 training queries)")
    t.add_argument("--lr", type=pos_float, default=None,
                   help="Adam learning rate (default: the preset's, else 0.003 for batches "
                        "< 1024 and 0.001 above)")
    t.add_argument("--lr-decay", type=decay, default=1.0,
                   help="the learning rate is --lr * LR_DECAY^(epoch - 1) in each epoch "
                        "(ConvE's code: 0.995; 1 = constant)")
    t.add_argument("--weight-decay", type=nonneg_float, default=0.0, help="Adam weight decay")
    t.add_argument("--loss", default="bce", choices=sorted(LOSSES),
                   help="bce: 1-N binary cross-entropy against every entity (the paper's, "
                        "the fused mixture op); softmax: 1-N cross-entropy of the softmax over "
                        "all entities against the uniform distribution over a query's "
                        "answers (LibKGE's KvsAll + CE; K = 1 or --order before, no "
                        "--entity-shards)")
    t.add_argument("--label-smoothing", type=fraction, default=0.1,
                   help="bce: eps in t = (1 - eps) y + 1/N (DisenKGAT/CompGCN convention); "
                        "softmax: t = (1 - eps) y / |y| + eps / N")
    t.add_argument("--eval-every", type=integer(1), default=1, help="validate every N epochs")
    t.add_argument("--patience", type=integer(0), default=None,
                   help="stop after N validations without a better MRR, counted after "
                        "--min-epochs (0 = never; default: the preset's, else max(20, "
                        "epochs / 5))")
    t.add_argument("--min-epochs", type=integer(0), default=None,
                   help="epochs before patience starts counting (default: epochs / 5)")
    t.add_argument("--eval-batch-size", type=integer(1), default=256,
                   help="queries per eval batch")
    t.add_argument("--rank-type", default="realistic",
                   choices=["realistic", "optimistic", "pessimistic"],
                   help="how tied scores are ranked in the headline metrics")
    t.add_argument("--loss-impl", default="auto", choices=list(LOSS_IMPLS),
                   help="the fused mixture-BCE loss (README, 'Implementations'): native / "
                        "chunked = logit tiles with the C / PyTorch element-wise code, "
                        "triton = GPU kernels, eager = all (B, K, N) logits at once; auto = "
                        "triton on CUDA, else native where it applies")
    t.add_argument("--loss-precision", default="auto", choices=list(PRECISIONS),
                   help="the mixture-BCE GEMMs (chunked CPU path): fp32; bf16 (float32 "
                        "tensors, bfloat16-rounded GEMM inputs, float32 accumulation and "
                        "logits); auto (default) = bf16 on CPUs with AMX / AVX512-BF16, else "
                        "fp32 (see README, 'Precision')")
    t.add_argument("--entity-shards", type=integer(1), default=1,
                   help="under torchrun: split the entity table and the 1-N scoring over "
                        "S ranks: each keeps 1/S of the per-entity parameters and their "
                        "optimiser state and scores its batch slice against its entities; "
                        "the processes (--nproc-per-node x --nnodes) form processes / S "
                        "data-parallel batch slices; exact (README, 'Several processes'). "
                        "1 = data-parallel only")
    add_model_arguments(p)
    return p


def default_output_dir(dataset: str, model: str) -> Path:
    """``runs/DATASET-MODEL``, with DATASET as :meth:`KGDataset.load` will name it."""
    src = KNOWN.get(str(dataset).lower())
    name = src.name if src is not None else Path(dataset).name.split(".")[0]
    return Path("runs") / f"{name}-{model}"


def apply_preset(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 explicit: set[str]) -> None:
    """Fills the keys not set explicitly from the dataset's preset (``--preset``)."""
    choice = args.preset
    if choice == "none":
        args.preset = None
        return
    name = Path(args.dataset).name.split(".")[0] if choice == "auto" else choice
    path = find_preset(name)
    if path is None:
        if choice != "auto":
            raise ConfigError(f"--preset {choice!r}: no such preset; choose one of "
                              f"{preset_names()} or 'auto' / 'none'")
        args.preset = None
        return
    if args.model != PRESET_MODEL:
        if choice != "auto":
            raise ConfigError(f"--preset {choice!r} configures {PRESET_MODEL}, not "
                              f"--model {args.model}")
        args.preset = None
        return
    for key, value in read_config(parser, path).items():
        if key not in explicit:
            setattr(args, key, value)
    args.preset = path.stem
    logger.info("preset %s (%s); flags and --config keys override it", path.stem, path)


def resolve_args(argv: list[str]) -> tuple[argparse.Namespace, RunDir]:
    """Parses and validates every flag and config key, applies a resumed run's saved
    config, and checks the run directory; reads no data."""
    parser = build_parser()
    args, explicit = parse_with_config(parser, argv)
    if not args.resume or not (Path(args.output_dir or default_output_dir(
            args.dataset, args.model)) / "config.json").exists():
        apply_preset(parser, args, explicit)
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args.dataset,
                                                                           args.model)
    run_dir = RunDir(out)
    if args.resume and (out / "config.json").exists():
        saved = run_dir.read_config()
        merged = merge_for_resume(saved.get("args", {}), vars(args), explicit,
                                  source=str(out))
        args = argparse.Namespace(**merged)
        args.output_dir = str(out)
    check_tracking(args.tensorboard)
    check_shapes(args)
    if _env_rank() == 0:  # under torchrun, rank 0 alone owns the run directory
        run_dir.prepare(resume=args.resume, overwrite=args.overwrite)
    return args, run_dir


def _env_rank() -> int:
    """This process's rank under ``torchrun`` (0 in a single process)."""
    return int(os.environ.get("RANK", "0"))


def train_from_args(args: argparse.Namespace, run_dir: RunDir) -> dict[str, Any]:
    """Builds the dataset, model and trainer from resolved arguments, trains, evaluates."""
    device = pick_device(args.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one GPU per rank, chosen before NCCL starts so that it uses that GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    ctx = init_from_env(device)
    shards, world = getattr(args, "entity_shards", 1), 1 if ctx is None else ctx.world_size
    if shards > 1 and (world % shards or world == 1):
        raise ConfigError(f"--entity-shards {shards} needs a multiple of {shards} processes "
                          f"(batch slices x shards), this job has {world}: launch with "
                          f"torchrun --nproc-per-node {shards} (or nodes x processes = a "
                          f"multiple of {shards})")
    if ctx is not None:
        if device.type != "cuda":  # the machine's cores shared by its ranks
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ctx.world_size)))
            torch.set_num_threads(max(1, torch.get_num_threads() // local))
        dist.barrier()  # rank 0 has prepared the run directory
    seed_everything(args.seed)
    limit = getattr(args, "max_archive_mb", None)
    dataset = KGDataset.load(args.dataset, data_dir=args.data_dir,
                             max_archive_bytes=limit << 20 if limit else None)
    if args.resume and run_dir.file("config.json").exists():
        saved = run_dir.read_config().get("dataset", {}).get("fingerprint", {})
        if saved and dataset.fingerprint and saved != dataset.fingerprint:
            diff = [s for s in saved if saved[s] != dataset.fingerprint.get(s)]
            raise CheckpointError(
                f"cannot resume {run_dir.path}: dataset {args.dataset} differs from the one "
                f"the run was trained on (split files {diff} have other sha256 sums)")
    entry = MODELS.get(args.model)
    for key, (value, why) in fill_defaults(args, entry, dataset).items():
        logger.info("derived %s = %s (%s)", key, value, why)
    check_shapes(args)
    model = entry.build(dataset, args).to(device)
    problem = model.softmax_loss_problem() if args.loss == "softmax" else None
    if problem is not None:
        raise ConfigError(f"--loss softmax: {problem} (use --order before, --num-components "
                          "1 or --loss bce)")
    if getattr(args, "bn0_scale", "learn") == "fixed":
        fix_bn0_scale(model)
    logger.info("model: %r (%d parameters)", model,
                sum(p.numel() for p in model.parameters()))
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        loss=args.loss, lr_decay=getattr(args, "lr_decay", 1.0),
        eval_every=args.eval_every, patience=args.patience, min_epochs=args.min_epochs,
        eval_batch_size=args.eval_batch_size, seed=args.seed, loss_impl=args.loss_impl,
        loss_precision=args.loss_precision,
        rank_type=args.rank_type, progress=not args.no_progress,
        entity_shards=shards,
    )
    run_config = {k: v for k, v in vars(args).items() if k not in ("config",)}
    # ranks = batch slices x entity shards; the shards of a slice share its queries
    run_config.update(world_size=world, entity_shards=shards,
                      per_rank_batch=-(-args.batch_size // (world // shards)))
    main_rank = ctx is None or ctx.is_main
    if main_rank:
        run_dir.write_config({
            "task": "link", "model": args.model, "args": run_config,
            "dataset": {"name": dataset.name, "source": str(args.dataset),
                        "num_entities": dataset.num_entities,
                        "num_relations": dataset.num_relations,
                        "fingerprint": dataset.fingerprint}})
        run_dir.write_dataset(dataset)
    callbacks = make_callbacks(run_dir.path, tensorboard=args.tensorboard) if main_rank else []
    trainer = LinkTrainer(model=model, dataset=dataset, config=config, output_dir=run_dir.path,
                          device=device, run_info={"model": args.model, "config": run_config},
                          callbacks=callbacks, dist=ctx)
    try:
        return trainer.fit(resume=args.resume)
    finally:
        if ctx is not None:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict:
    args, run_dir = resolve_args(list(argv) if argv is not None else [])
    if _env_rank() != 0:  # other ranks of a torchrun job: warnings and errors only
        with logging_context("WARNING"):
            return train_from_args(args, run_dir)
    print(f"run directory: {run_dir.path}" + (" (resuming)" if args.resume else ""))
    print(f"preset: {args.preset or 'none (defaults derived from the KG size are logged)'}")
    with logging_context(args.log_level):
        metrics = train_from_args(args, run_dir)
    print(f"\n{metrics['dataset']} / {args.model}: best epoch {metrics['best_epoch']} of "
          f"{metrics['epochs_run']}, {metrics['train_seconds']:.1f} s training")
    print(format_table(metrics))
    print(f"metrics written to {run_dir.file('metrics.json')}")
    logger.debug("metrics: %s", json.dumps(metrics["test"]))
    return metrics
