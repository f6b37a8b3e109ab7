"""A link-prediction run from a resolved :class:`~disenkg.pipeline.LinkConfig`: the run
directory, the data, the derived settings, the model, training and the final metrics.

:func:`prepare_run` checks everything that needs no data (a resumed run's saved settings,
the run directory, optional packages) and :func:`train_link` does the rest; the command
line and :func:`disenkg.train` call the two in this order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from disenkg.datasets import KNOWN, KGDataset
from disenkg.errors import CheckpointError, ConfigError
from disenkg.models.registry import MODELS
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.pipeline.plan import ImplPlan, build_plan
from disenkg.runs.resume import merge_for_resume
from disenkg.runs.rundir import RunDir
from disenkg.runs.tracking import check_tracking, make_callbacks
from disenkg.training import LinkTrainer
from disenkg.training.distributed import init_from_env
from disenkg.utils import seed_everything
from disenkg.utils.device import pick_device

__all__ = ["default_output_dir", "env_rank", "load_dataset", "prepare_run", "train_link"]

logger = logging.getLogger(__name__)


def default_output_dir(dataset: str, model: str) -> Path:
    """``runs/DATASET-MODEL``, with DATASET as :meth:`KGDataset.load` will name it."""
    src = KNOWN.get(str(dataset).lower())
    name = src.name if src is not None else Path(dataset).name.split(".")[0]
    return Path("runs") / f"{name}-{model}"


def env_rank() -> int:
    """This process's rank under ``torchrun`` (0 in a single process)."""
    return int(os.environ.get("RANK", "0"))


def output_path(config: LinkConfig) -> Path:
    return Path(config.run.output_dir or default_output_dir(config.data.dataset,
                                                            config.model_name))


def prepare_run(layers: list[Layer]) -> tuple[LinkConfig, RunDir]:
    """Resolves the configuration from ``layers`` (lowest precedence first), applies a
    resumed run's saved settings, and checks the run directory; reads no data.

    A resumed run (``resume`` with a ``config.json`` in the run directory) keeps its saved
    settings; a layer may change only those in
    :data:`~disenkg.runs.resume.SAFE_TO_CHANGE`.
    """
    config = LinkConfig.resolve(layers, preset=False)
    out = output_path(config)
    run_dir = RunDir(out)
    if config.run.resume and (out / "last.pt").exists():
        run_dir.verify()  # config.json present, files as the run wrote them
    if config.run.resume and (out / "config.json").exists():
        saved = run_dir.read_config()
        explicit = {k: layer.source for layer in layers for k in layer.values}
        merged = merge_for_resume(saved.get("args", {}), config.flat(), set(explicit),
                                  source=str(out))
        merged["output_dir"] = str(out)
        config = LinkConfig.resolve([Layer("saved", merged, str(out / "config.json"))],
                                    preset=False)
        sources = dict(saved.get("sources", {}))  # runs before 0.2 recorded none
        config = config.with_sources({k: sources.get(k, "saved") for k in config.flat()}
                                     | explicit)
    else:
        config = LinkConfig.resolve(layers)
    check_tracking(config.run.tensorboard)
    if env_rank() == 0:  # under torchrun, rank 0 alone owns the run directory
        run_dir.prepare(resume=config.run.resume, overwrite=config.run.overwrite)
    return config, run_dir


def _planned(config: LinkConfig, plan: ImplPlan) -> tuple[Any, Any]:
    """The model and training sections with the plan's implementations and precisions
    (``config.json`` keeps the settings as given; the plan records what runs)."""
    model, training = config.model, config.training
    if plan.head_impl is not None:
        model = model.replace(head_impl=plan.head_impl, head_precision=plan.head_precision)
    if plan.encoder_impl is not None:
        model = model.replace(encoder_impl=plan.encoder_impl)
    if plan.loss_impl is not None:
        training = training.replace(loss_impl=plan.loss_impl,
                                    loss_precision=plan.loss_precision)
    return model, training


def load_dataset(config: LinkConfig) -> KGDataset:
    """The KG that ``config``'s data section names."""
    data = config.data
    return KGDataset.load(data.dataset, data_dir=data.data_dir,
                          max_archive_bytes=data.max_archive_mb << 20
                          if data.max_archive_mb else None)


def train_link(config: LinkConfig, run_dir: RunDir, *, dataset: KGDataset | None = None,
               callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
               test: bool = True, search: dict[str, Any] | None = None) -> dict[str, Any]:
    """Loads the KG, derives the remaining settings, builds the model, trains with early
    stopping and evaluates the best model; returns the metrics (``metrics.json``).

    Args:
        config: the resolved configuration (:func:`prepare_run`).
        run_dir: the prepared run directory; unlocked on return.
        dataset: the KG already loaded from ``config.data`` (a search loads it once for
            all its trials); loaded here when ``None``.
        callbacks: more per-epoch callbacks (each epoch's history row), after the run's own.
        test: evaluate the best model on the test split (a search's trials do not: only
            its best trial is tested).
        search: the record of the built-in search that chose the settings
            (:mod:`disenkg.pipeline.search`), kept in ``config.json``; a resumed run keeps
            the one it has.
    """
    device = pick_device(config.run.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one GPU per rank, chosen before NCCL starts so that it uses that GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    ctx = init_from_env(device)
    shards, world = config.training.entity_shards, 1 if ctx is None else ctx.world_size
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
    seed_everything(config.training.seed)
    data = config.data
    if dataset is None:
        dataset = load_dataset(config)
    if config.run.resume and run_dir.file("config.json").exists():
        saved = run_dir.read_config().get("dataset", {}).get("fingerprint", {})
        if saved and dataset.fingerprint and saved != dataset.fingerprint:
            diff = [s for s in saved if saved[s] != dataset.fingerprint.get(s)]
            raise CheckpointError(
                f"cannot resume {run_dir.path}: dataset {data.dataset} differs from the one "
                f"the run was trained on (split files {diff} have other sha256 sums)")
    config, derived = config.derive(dataset)
    for key, (value, why) in derived.items():
        logger.info("derived %s = %s (%s)", key, value, why)
    plan = build_plan(config, device)
    logger.info("%s", plan.describe())
    model_config, training = _planned(config, plan)
    model = MODELS.get(config.model_name).build(dataset, model_config,
                                                seed=training.seed).to(device)
    problem = model.softmax_loss_problem() if config.training.loss == "softmax" else None
    if problem is not None:
        raise ConfigError(f"--loss softmax: {problem} (use --order before, --num-components "
                          "1 or --loss bce)")
    logger.info("model: %r (%d parameters)", model,
                sum(p.numel() for p in model.parameters()))
    run_config = config.flat()
    # ranks = batch slices x entity shards; the shards of a slice share its queries
    run_config.update(world_size=world,
                      per_rank_batch=-(-config.training.batch_size // (world // shards)))
    main_rank = ctx is None or ctx.is_main
    if main_rank:
        if search is None and config.run.resume and run_dir.file("config.json").exists():
            search = run_dir.read_config().get("search")
        if config.run.overwrite and not config.run.resume:
            # only now: the data and the model are in hand (a search made here stays)
            run_dir.replace_previous(keep=("search", "search.tsv") if search else ())
        run_dir.write_config({
            "task": "link", "model": config.model_name, "args": run_config,
            "sources": dict(config.sources), "plan": plan.record(),
            "dataset": {"name": dataset.name, "source": str(data.dataset),
                        "num_entities": dataset.num_entities,
                        "num_relations": dataset.num_relations,
                        "fingerprint": dataset.fingerprint},
            **({"search": search} if search else {})})
        run_dir.write_dataset(dataset)
        run_dir.write_manifest()
    callbacks = ((make_callbacks(run_dir.path, tensorboard=config.run.tensorboard)
                  + list(callbacks or [])) if main_rank else [])
    trainer = LinkTrainer(model=model, dataset=dataset, config=training,
                          output_dir=run_dir.path, device=device,
                          run_info={"model": config.model_name, "config": run_config},
                          callbacks=callbacks, dist=ctx)
    try:
        return trainer.fit(resume=config.run.resume, test=test)
    finally:
        if ctx is not None:
            dist.destroy_process_group()
        run_dir.unlock()
