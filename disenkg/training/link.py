"""Training loop for 1-N link prediction: early stopping, atomic checkpoints, resume.

Every epoch ends with ``OUTPUT_DIR/last.pt`` (model, optimiser(s), all RNG states, epoch,
early-stopping state) and ``OUTPUT_DIR/history.csv`` written atomically, so a killed run
resumed with ``resume=True`` continues exactly where it stopped and reaches the same final
metrics. The best model by validation MRR is kept in ``OUTPUT_DIR/best.pt``. Checkpoints
hold tensors and plain values only and load with ``weights_only=True``
(:mod:`disenkg.runs.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from disenkg.datasets.kg import KGDataset
from disenkg.datasets.triples import DatasetError
from disenkg.errors import CheckpointError, ConfigError
from disenkg.evaluation import LinkEvaluator
from disenkg.models.base import MixtureLinkModel
from disenkg.runs.checkpoint import load_checkpoint, save_checkpoint
from disenkg.runs.rundir import RunDir
from disenkg.training.config import LOSS_NAMES, TrainingConfig
from disenkg.training.distributed import (
    DistContext,
    all_reduce_grads,
    broadcast_module,
    make_layout,
    sum_scalar,
)
from disenkg.training.early_stopping import EarlyStopping
from disenkg.training.optim import ChunkedAdam
from disenkg.utils.distributed import sync_batch_stats
from disenkg.utils.entity_shards import balanced_bounds
from disenkg.utils.io import atomic_write_text
from disenkg.utils.memory import return_large_buffers, trim_heap
from disenkg.utils.seed import get_rng_state, set_rng_state

__all__ = ["LOSSES", "LinkTrainer", "TrainConfig"]

logger = logging.getLogger(__name__)

#: training steps between progress-bar loss updates on a GPU (each update waits for it)
SHOW_EVERY = 20


def _bce_loss(model: MixtureLinkModel, reps: Any, heads: torch.Tensor, rels: torch.Tensor,
              target: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
              total_queries: int | None = None) -> torch.Tensor:
    """1-N BCE against every entity, the fused mixture op (:meth:`MixtureLinkModel.loss`);
    ``total_queries``: the batch the queries are a slice of (their share of its mean)."""
    return model.loss(reps, heads, rels, target, label_smoothing=config.label_smoothing,
                      impl=config.loss_impl, precision=config.loss_precision,
                      total_queries=total_queries)


def _softmax_loss(model: MixtureLinkModel, reps: Any, heads: torch.Tensor,
                  rels: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor],
                  config: TrainConfig, total_queries: int | None = None) -> torch.Tensor:
    """1-N softmax cross-entropy (:meth:`MixtureLinkModel.softmax_loss`), as a share of
    ``total_queries`` when given."""
    loss = model.softmax_loss(reps, heads, rels, target,
                              label_smoothing=config.label_smoothing)
    return loss if total_queries is None else loss * (len(heads) / total_queries)


#: training losses by name: ``bce`` (the paper's) and ``softmax`` (KvsAll cross-entropy)
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"bce": _bce_loss, "softmax": _softmax_loss}
if tuple(LOSSES) != LOSS_NAMES:  # the configuration's choices name exactly these
    raise RuntimeError(f"LOSSES {tuple(LOSSES)} != LOSS_NAMES {LOSS_NAMES}")


#: the training section of a configuration (:class:`disenkg.training.config.TrainingConfig`)
TrainConfig = TrainingConfig


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the epoch's batches over ``n`` queries: ``batch_size`` each,
    except that a last batch of a single query joins the one before (batch norm cannot
    train on one sample, and a KG's query count may be 1 modulo the batch size)."""
    bounds = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class LinkTrainer:
    """Trains a :class:`MixtureLinkModel` on a :class:`KGDataset`.

    Args:
        model (MixtureLinkModel): the model, already on ``device``.
        dataset (KGDataset): the data.
        config (TrainConfig): optimisation settings.
        output_dir (str | Path): where checkpoints and ``metrics.json`` go.
        device (torch.device): where training runs.
        run_info (dict, optional): extra fields for ``metrics.json`` (model name, config).
        callbacks (list, optional): functions called with each epoch's history row (a
            dict of :data:`~disenkg.runs.rundir.HISTORY_COLUMNS`), e.g. a tracker.
    """

    def __init__(self, *, model: MixtureLinkModel, dataset: KGDataset, config: TrainConfig,
                 output_dir: str | Path, device: torch.device | str = "cpu",
                 run_info: dict[str, Any] | None = None,
                 callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
                 dist: DistContext | None = None) -> None:
        config = config.resolved()
        self.model = model
        self.dist = dist
        self.dataset = dataset
        self.config = config
        self.output_dir = Path(output_dir)
        self.run_dir = RunDir(self.output_dir)
        self.callbacks = list(callbacks or [])
        self.device = torch.device(device)
        self.run_info = run_info or {}
        self.train_index = dataset.training_index()
        if len(self.train_index) < 2 and any(
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise DatasetError(f"{dataset.name}: {len(self.train_index)} training query; the "
                               "model's batch norm needs at least 2 (add training triples, "
                               "or use a scorer without batch norm such as distmult)")
        self.evaluator = LinkEvaluator(filter_index=dataset.filter_index(),
                                       batch_size=config.eval_batch_size,
                                       rank_type=config.rank_type,
                                       progress=config.progress and self.is_main)
        if config.entity_shards > 1 and dist is None:
            raise ValueError(f"{config.entity_shards} entity shards need a multiple of "
                             f"{config.entity_shards} processes (launch with torchrun "
                             f"--nproc-per-node {config.entity_shards}), this job has 1")
        #: the job's split (batch slices x entity shards), None in one process
        self.layout = (make_layout(dist, config.entity_shards, dataset.num_entities,
                                   self._shard_bounds(model))
                       if dist is not None else None)
        self.shard = self.layout.shard if self.layout is not None else None
        if self.shard is not None:  # a shard's positives and filter: its entities' only
            lo, hi = self.shard.lo, self.shard.hi
            self.train_index = self.train_index.restrict(lo, hi)
            self.evaluator.filter_index = self.evaluator.filter_index.restrict(
                lo, hi, keep_queries=False)
        if config.entity_shards > 1:  # a rank's memory is the point (disenkg.utils.memory)
            return_large_buffers()
        trim_heap()  # the indices' freed temporaries (disenkg.utils.memory)
        if dist is not None:  # one start on every rank
            broadcast_module(model)
            if self.shard is None:  # ranks split each evaluation's queries
                self.evaluator.dist = dist
            else:  # the shards of a batch slice split each evaluation's entities (every
                model.shard_entities(  # slice evaluates all queries)
                    self.shard, halo_recompute=config.halo_recompute)
                self.evaluator.shard = self.shard
        # in the model's order on every rank: collectives run in this order
        sharded = model.sharded_parameters() if self.shard is not None else ()
        named = dict(model.named_parameters())
        self._sharded = {name: named[name] for name in sharded}
        aux_params = list(model.auxiliary_parameters())
        aux_ids = {id(p) for p in aux_params}
        main_params = [p for p in model.parameters() if id(p) not in aux_ids]
        self._params = (main_params, aux_params)
        sharded_ids = {id(p) for p in self._sharded.values()}
        #: parameters every rank holds whole (their gradients are summed over the ranks)
        self._replicated = [p for p in main_params if id(p) not in sharded_ids]
        # Adam, with the large CPU tables updated chunk by chunk (no table-sized temporaries)
        self.optimizer = ChunkedAdam(main_params, lr=config.lr,
                                     weight_decay=config.weight_decay)
        self.aux_optimizer = (torch.optim.Adam(aux_params, lr=model.auxiliary_lr)
                              if aux_params else None)
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        #: validation MRR's best and patience (the checkpoint keeps best_mrr / best_epoch /
        #: bad_evals, as every version did)
        self.stopper = EarlyStopping(patience=config.patience, min_epochs=config.min_epochs)
        self.stopper.best = [-1.0]
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._reg_sum = torch.zeros(())

    def _shard_bounds(self, model: MixtureLinkModel) -> list[int] | None:
        """The entity ids' cuts of ``--partition`` (``None``: equal ranges)."""
        cfg = self.config
        if cfg.entity_shards == 1 or cfg.partition == "range":
            return None
        loads = model.entity_loads()
        if loads is None:
            raise ConfigError(f"--partition {cfg.partition} balances a graph encoder's edges "
                              f"over the shards; {type(model).__name__} has no graph encoder",
                              hint="use --partition range")
        return balanced_bounds(loads, cfg.entity_shards)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0, or the only process)."""
        return self.dist is None or self.dist.is_main

    @property
    def world_size(self) -> int:
        return 1 if self.dist is None else self.dist.world_size

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    def model_state(self) -> dict[str, Any]:
        """The whole model's state (entity-sharded parameters gathered from every rank: a
        collective call then)."""
        state = self.model.state_dict()
        for name in self._sharded:
            state[name] = self.shard.gather_full(state[name])
        return state

    def _load_model_state(self, state: dict[str, Any]) -> None:
        if self._sharded:
            state = {k: (self.shard.slice(v) if k in self._sharded else v)
                     for k, v in state.items()}
        self.model.load_state_dict(state)

    def _sharded_slots(self) -> set[int]:
        """Indices (in the main optimiser's state) of the entity-sharded parameters."""
        ids = {id(p) for p in self._sharded.values()}
        return {i for i, p in enumerate(self._params[0]) if id(p) in ids}

    def optimizer_state(self) -> dict[str, Any]:
        """The main optimiser's state, the sharded parameters' moments gathered whole."""
        state = self.optimizer.state_dict()
        slots = self._sharded_slots()
        if slots:
            state = {**state, "state": {
                i: ({k: (self.shard.gather_full(v) if i in slots and torch.is_tensor(v)
                         and v.dim() > 0 else v) for k, v in st.items()})
                for i, st in state["state"].items()}}
        return state

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        slots = self._sharded_slots()
        if slots:
            state = {**state, "state": {
                i: ({k: (self.shard.slice(v) if int(i) in slots and torch.is_tensor(v)
                         and v.dim() > 0 else v) for k, v in st.items()})
                for i, st in state["state"].items()}}
        self.optimizer.load_state_dict(state)

    def _warn_if_over_budget(self, seconds: float) -> None:
        """After the first epoch: a WARNING when the remaining epochs at this pace would
        take more than twice the time budget (the epoch estimate behind derived epochs
        counts the scorer, not e.g. K^2 MI estimators at a large K)."""
        left = self.config.epochs - self.epoch
        budget = 60 * self.config.time_budget
        if self.is_main and seconds * left > 2 * budget:
            logger.warning("epoch %d took %.1f s: the %d epochs left would take ~%.0f min, "
                           "beyond twice the %.0f-minute time budget; set --epochs (or "
                           "--time-budget), or a smaller model", self.epoch, seconds, left,
                           seconds * left / 60, budget / 60)

    def _manifest(self) -> dict[str, str]:
        """The run files' manifest digest (:meth:`RunDir.write_manifest`) for a checkpoint;
        empty where the directory has none (a trainer used directly)."""
        digest = self.run_dir.manifest_digest() if self.is_main else None
        return {} if digest is None else {"manifest": digest}

    @property
    def best_mrr(self) -> float:
        return self.stopper.best[0]

    @property
    def best_epoch(self) -> int:
        return self.stopper.best_epoch

    @property
    def bad_evals(self) -> int:
        return self.stopper.bad

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (a collective call when entity-sharded)."""
        return {
            "model": self.model_state(),
            "optimizer": self.optimizer_state(),
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            "epoch": self.epoch,
            "rng": get_rng_state(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "best_mrr": self.best_mrr,
            "best_epoch": self.best_epoch,
            "bad_evals": self.stopper.bad,
            "train_seconds": self.train_seconds,
            "history": self.history,
            "world_size": self.world_size,
            "entity_shards": self.config.entity_shards,
            **self._manifest(),
            "dataset": {"num_entities": self.dataset.num_entities,
                        "num_relations": self.dataset.num_relations,
                        "fingerprint": dict(self.dataset.fingerprint)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_model_state(state["model"])
        self._load_optimizer_state(state["optimizer"])
        if self.aux_optimizer is not None and state.get("aux_optimizer") is not None:
            self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        self.epoch = state["epoch"]
        set_rng_state(state["rng"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.stopper.load_state_dict({"best": [state["best_mrr"]],
                                      "best_epoch": state["best_epoch"],
                                      "bad": state["bad_evals"]})
        self.train_seconds = state["train_seconds"]
        self.history = state["history"]

    def resume(self) -> bool:
        """Loads ``last.pt`` if present; returns whether a run was resumed.

        Raises:
            CheckpointError: the checkpoint is corrupt or unsafe, or was written for another
                dataset (other sizes or split-file fingerprints).
        """
        if not self.last_path.exists():
            logger.info("no checkpoint at %s: starting a new run", self.last_path)
            return False
        state = load_checkpoint(self.last_path, required=("model", "optimizer", "epoch", "rng",
                                                          "history", "dataset"))
        if state.get("world_size", 1) != self.world_size:
            raise CheckpointError(
                f"{self.last_path} was written by a run of {state.get('world_size', 1)} "
                f"process(es), this one has {self.world_size}",
                hint="resume with the number of ranks the run was started with")
        if state.get("entity_shards", 1) != self.config.entity_shards:
            raise CheckpointError(
                f"{self.last_path} was written by a run of {state.get('entity_shards', 1)} "
                f"entity shard(s), this one has {self.config.entity_shards}",
                hint="resume with the --entity-shards the run was started with")
        saved, ds = state["dataset"], self.dataset
        here = {"num_entities": ds.num_entities, "num_relations": ds.num_relations,
                "fingerprint": dict(ds.fingerprint)}
        diff = [k for k in here if k != "fingerprint" and saved.get(k) != here[k]]
        if saved.get("fingerprint") and here["fingerprint"] and (
                saved["fingerprint"] != here["fingerprint"]):
            diff.append("fingerprint")
        if diff:
            raise CheckpointError(
                f"{self.last_path} was written for another dataset: "
                + "; ".join(f"{k} {saved.get(k)} there, {here[k]} here" for k in diff),
                hint="resume with the dataset the run was started on")
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{self.last_path} does not fit this model: "
                                  f"{str(err).splitlines()[0]}") from err
        logger.info("resumed from %s at epoch %d", self.last_path, self.epoch)
        return True

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> float:
        """One pass over the shuffled 1-N training queries; returns the mean loss."""
        cfg, model = self.config, self.model
        model.train()
        order = torch.randperm(len(self.train_index), generator=self.shuffle_gen)
        if cfg.lr_decay != 1.0:  # lr * decay^epoch, from the epoch alone: exact on resume
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * cfg.lr_decay ** self.epoch
        if self.dist is not None:  # this slice's dropout stream, reproducible on resume
            # (the shards of one batch slice compute the same queries: the same stream)
            torch.manual_seed(self.layout.data.epoch_seed(cfg.seed, self.epoch))
        total, batches = torch.zeros((), dtype=torch.float64, device=self.device), 0
        self._reg_sum = torch.zeros((), device=self.device)
        bar = tqdm(batch_bounds(len(order), cfg.batch_size), desc=f"epoch {self.epoch + 1}",
                   leave=False, disable=not (cfg.progress and self.is_main))
        # On a GPU the host reads a loss only for the progress bar (every SHOW_EVERY steps)
        # and at the end of the epoch, so the device is never waited for in between.
        lazy = self.device.type != "cpu"
        for i, (s, e) in enumerate(bar):
            loss = self._step(order[s:e], check=not lazy)
            total += loss
            batches += 1
            if cfg.progress and (not lazy or i % SHOW_EVERY == 0):
                bar.set_postfix(loss=f"{float(loss):.4f}")
        mean = float(total) / max(1, batches)
        if not math.isfinite(mean):
            raise FloatingPointError(f"non-finite training loss (epoch mean {mean}) at epoch "
                                     f"{self.epoch + 1}")
        if self.dist is not None:  # each rank holds its share of the MI penalty
            self._reg_sum = sum_scalar(self._reg_sum)
        self._last_mi = float(self._reg_sum) / max(1, batches)
        return mean

    def train_step(self, ids: torch.Tensor) -> float:
        """One optimisation step on the queries ``ids``; returns the loss value."""
        return float(self._step(ids, check=True))

    def _step(self, ids: torch.Tensor, check: bool) -> torch.Tensor:
        """One optimisation step; the detached loss stays on the device. ``check`` stops a
        non-finite loss before the update (a host synchronisation per step). Data-parallel,
        the scorers' batch norms use the global batch (:func:`sync_batch_stats`)."""
        data = self.layout.data if self.layout is not None else None
        with sync_batch_stats(data is not None and data.world_size > 1,
                              self.layout.data_group if self.layout is not None else None):
            return self._step_body(ids, check)

    def _step_body(self, ids: torch.Tensor, check: bool) -> torch.Tensor:
        model = self.model
        scale = 1.0
        data = self.layout.data if self.layout is not None else None
        total = None  # the batch this rank's queries are a slice of
        if data is not None and data.world_size > 1:  # this slice, weighted by its share
            mine = data.shard(ids)
            # a last batch smaller than the number of slices: a zero-weighted query here,
            # so that every rank's gradients come from the same parameters
            total = len(ids) if len(mine) else None
            ids, scale = (mine, len(mine) / len(ids)) if len(mine) else (ids[:1], 0.0)
        # entity-sharded, the BCE is this rank's share already; the terms that every shard
        # of a slice computes alike (the penalty, the estimators' loss) count 1/S each
        share = scale / self.shard.num_shards if self.shard is not None else scale
        self.optimizer.zero_grad(set_to_none=True)
        reps = model.encode()
        queries = self.train_index.pairs(ids).to(self.device)
        rows, cols = self.train_index.batch(ids)
        target = (rows.to(self.device), cols.to(self.device))
        loss = LOSSES[self.config.loss](model, reps, queries[:, 0], queries[:, 1], target,
                                        self.config, total_queries=total)
        reg = model.regularization(reps, queries[:, 0])
        if total is None and scale != 1.0:  # (the zero-weighted query)
            loss = loss * scale
        if reg is not None:
            self._reg_sum = self._reg_sum.to(reg.device) + reg.detach().float() * share
            loss = loss + reg * share
        value = loss.detach() if self.dist is None else sum_scalar(loss)
        if check and not torch.isfinite(value):
            raise FloatingPointError(f"non-finite training loss {value.item()} at epoch "
                                     f"{self.epoch + 1}")
        if self.aux_optimizer is None or not model.auxiliary_reads_reps:
            # the encoder's rows go when the loss's backward has read them, not after the
            # encoder's (the estimator, if any, recomputes its input)
            reps = None
        loss.backward()
        del loss, reg  # the head's and the loss's graph, before the estimator's pass
        if self.dist is not None:  # sharded rows' gradients: whole within a slice already
            all_reduce_grads(self._replicated)
            if self._sharded and self.layout.data.world_size > 1:
                all_reduce_grads(list(self._sharded.values()), self.layout.data_group)
        self.optimizer.step()
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
            aux = model.auxiliary_loss(reps, queries[:, 0])
            (aux * share if share != 1.0 else aux).backward()
            if self.dist is not None:
                all_reduce_grads(self._params[1])
            self.aux_optimizer.step()
        return value

    def fit(self, *, resume: bool = False, test: bool = True) -> dict[str, Any]:
        """Trains with early stopping on validation MRR, then evaluates the best model
        (:meth:`finish`)."""
        cfg = self.config
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._last_mi = 0.0
        if resume:
            self.resume()
        bar = tqdm(range(self.epoch, cfg.epochs), desc="epochs",
                   disable=not (cfg.progress and self.is_main), initial=self.epoch,
                   total=cfg.epochs)
        warned = False
        for _ in bar:
            if self.stopper.should_stop:
                break  # a resumed run that had already stopped early
            t0 = time.perf_counter()
            loss = self.train_epoch()
            self.train_seconds += time.perf_counter() - t0
            self.epoch += 1
            if not warned:
                warned = True
                self._warn_if_over_budget(time.perf_counter() - t0)
            record: dict[str, Any] = {"epoch": self.epoch, "loss": loss,
                                      "mi_loss": self._last_mi}
            if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                if self.dist is not None and self.shard is None:
                    broadcast_module(self.model)  # rank 0's batch-norm running statistics
                valid = self.evaluator.evaluate(self.model, self.dataset.valid, desc="valid")
                record.update({f"valid_{k}": valid[k] for k in ("mrr", "hits@1", "hits@3",
                                                                  "hits@10")})
                if self.stopper.update(valid["mrr"], epoch=self.epoch).best:
                    best_state = self.model_state() if (self.is_main or self._sharded) else None
                    if self.is_main:
                        save_checkpoint({"model": best_state, "epoch": self.epoch,
                                         "valid": valid, **self._manifest()}, self.best_path)
                logger.info("epoch %d loss %.5f valid MRR %.4f (best %.4f at %d)",
                            self.epoch, loss, valid["mrr"], self.best_mrr, self.best_epoch)
            else:
                logger.info("epoch %d loss %.5f", self.epoch, loss)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            self.history.append(record)
            bar.set_postfix(loss=f"{loss:.4f}", best_mrr=f"{self.best_mrr:.4f}")
            state = self.state_dict() if (self.is_main or self._sharded) else None
            if self.is_main:
                save_checkpoint(state, self.last_path)
                self.run_dir.write_history(self.history)
                for cb in self.callbacks:
                    cb(record)
            if self.stopper.should_stop:
                logger.info("early stopping after %d evaluations without improvement",
                            self.stopper.bad)
                break
        return self.finish(test=test)

    def finish(self, *, test: bool = True) -> dict[str, Any]:
        """Evaluates the best checkpoint on valid and (``test``) test and writes
        ``metrics.json`` (without a ``test`` entry when ``test`` is false).

        Raises:
            CheckpointError: ``best.pt`` is missing or unreadable (never silently evaluates
                the last model instead).
        """
        if self._sharded:  # every rank reads its rows of the best model
            torch.distributed.barrier()  # rank 0 has written it
        if self.is_main or self._sharded:
            if not self.best_path.exists():
                raise CheckpointError(f"{self.best_path} is missing: no validated model to "
                                      f"evaluate (epochs run: {self.epoch})")
            best = load_checkpoint(self.best_path, required=("model",))
            self._load_model_state(best["model"])
        if self.dist is not None and not self._sharded:  # rank 0's best model everywhere
            broadcast_module(self.model)
        valid = self.evaluator.evaluate(self.model, self.dataset.valid, desc="valid")
        tested = (self.evaluator.evaluate(self.model, self.dataset.test, desc="test")
                  if test else None)
        metrics = {
            "dataset": self.dataset.name,
            **self.run_info,
            "config": {**self.run_info.get("config", {}),
                       "train": dataclasses.asdict(self.config)},
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "train_seconds": round(self.train_seconds, 3),
            "valid": valid,
        }
        if tested is not None:
            metrics["test"] = tested
        metrics.setdefault("model", type(self.model).__name__.lower())
        if self.is_main:
            atomic_write_text(json.dumps(metrics, indent=2) + "\n",
                              self.output_dir / "metrics.json")
        return metrics
