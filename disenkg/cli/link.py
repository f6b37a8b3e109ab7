"""``python -m disenkg.run link``: train and evaluate a link-prediction model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from disenkg.cli.common import apply_config, format_table, pick_device, setup_logging
from disenkg.cli.link_models import MODELS, add_model_arguments, fill_defaults
from disenkg.datasets import KGDataset
from disenkg.ops.precision import PRECISIONS
from disenkg.training import LinkTrainer, TrainConfig
from disenkg.utils import seed_everything

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "disenkgat"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m disenkg.run link",
        description="Train a link-prediction model with 1-N BCE, early stopping on validation "
                    "MRR, and report filtered MRR / MR / Hits@k on valid and test in both "
                    "directions. Writes OUTPUT_DIR/metrics.json and checkpoints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.toml",
                   help="TOML file whose keys are flag names; flags given here override it")
    g.add_argument("--dataset", default="umls",
                   help="dataset name (FB15k-237, WN18RR, kinship, umls) or a path to a "
                        "directory / .tar.gz / .zip holding train.txt, valid.txt, test.txt")
    g.add_argument("--data-dir", default=None,
                   help="directory searched first for named datasets (then $DISENKG_DATA, "
                        "the repo's data/, then download into ~/.cache/disenkg)")
    g.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS.names(),
                   help="model to train: " + "; ".join(
                       f"{n} = {MODELS.get(n).help}" for n in MODELS.names()))
    g.add_argument("--output-dir", default=None,
                   help="where checkpoints and metrics.json go (default: runs/DATASET-MODEL)")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last.pt if it exists")
    g.add_argument("--seed", type=int, default=0, help="random seed (init, dropout, shuffling)")
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument("--no-progress", action="store_true", help="hide tqdm progress bars")
    g.add_argument("--log-level", default="INFO", help="logging level")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=500, help="maximum training epochs")
    t.add_argument("--batch-size", type=int, default=None,
                   help="1-N queries per step (default: 2048 DisenKGAT, 128 ConvE)")
    t.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: 0.001 DisenKGAT, 0.003 ConvE)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay")
    t.add_argument("--label-smoothing", type=float, default=0.1,
                   help="eps in t = (1 - eps) y + 1/N (DisenKGAT/CompGCN convention)")
    t.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    t.add_argument("--patience", type=int, default=25,
                   help="stop after N validations without a better MRR (0 = never)")
    t.add_argument("--eval-batch-size", type=int, default=256, help="queries per eval batch")
    t.add_argument("--rank-type", default="realistic",
                   choices=["realistic", "optimistic", "pessimistic"],
                   help="how tied scores are ranked in the headline metrics")
    t.add_argument("--impl", default="auto", choices=["auto", "torch", "chunked", "triton"],
                   help="implementation of the fused mixture-BCE loss")
    t.add_argument("--loss-precision", default="auto", choices=list(PRECISIONS),
                   help="the mixture-BCE GEMMs (chunked CPU path): fp32; bf16 (float32 "
                        "tensors, bfloat16-rounded GEMM inputs, float32 accumulation and "
                        "logits); auto (default) = bf16 on CPUs with AMX / AVX512-BF16, else "
                        "fp32 (see README, 'Precision')")
    add_model_arguments(p)
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = apply_config(parser, list(argv) if argv is not None else [])
    setup_logging(args.log_level)
    device = pick_device(args.device)
    seed_everything(args.seed)
    dataset = KGDataset.load(args.dataset, data_dir=args.data_dir)
    entry = MODELS.get(args.model)
    fill_defaults(args, entry)
    model = entry.build(dataset, args).to(device)
    logger.info("model: %r (%d parameters)", model,
                sum(p.numel() for p in model.parameters()))
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        eval_every=args.eval_every, patience=args.patience,
        eval_batch_size=args.eval_batch_size, seed=args.seed, impl=args.impl,
        loss_precision=args.loss_precision,
        rank_type=args.rank_type, progress=not args.no_progress,
    )
    out = Path(args.output_dir or f"runs/{dataset.name}-{args.model}")
    run_config = {k: v for k, v in vars(args).items() if k not in ("config",)}
    trainer = LinkTrainer(model=model, dataset=dataset, config=config, output_dir=out,
                          device=device, run_info={"model": args.model, "config": run_config})
    metrics = trainer.fit(resume=args.resume)
    print(f"\n{dataset.name} / {args.model}: best epoch {metrics['best_epoch']} of "
          f"{metrics['epochs_run']}, {metrics['train_seconds']:.1f} s training")
    print(format_table(metrics))
    print(f"metrics written to {out / 'metrics.json'}")
    logger.debug("metrics: %s", json.dumps(metrics["test"]))
    return metrics
