"""The training section of a link-prediction configuration: optimisation, early stopping,
evaluation and the loss's implementation.

``epochs``, ``batch_size``, ``lr``, ``patience`` and ``min_epochs`` may be ``None`` in a
configuration (derived from the KG by :mod:`disenkg.defaults` when a run is resolved); a
:class:`~disenkg.training.LinkTrainer` needs them set.
"""

from __future__ import annotations

from dataclasses import dataclass

from disenkg.config.options import Section, option
from disenkg.config.rules import (
    as_bool,
    decay,
    fraction,
    integer,
    nonneg_float,
    one_of,
    pos_float,
)
from disenkg.config.search import Choice, Range
from disenkg.defaults import BUDGET_MINUTES, early_stopping
from disenkg.errors import ConfigError
from disenkg.ops.impls import OP_IMPLS
from disenkg.ops.precision import PRECISIONS
from disenkg.utils.entity_shards import PARTITIONS

__all__ = ["LOSS_NAMES", "RANK_TYPES", "SEARCH_MODES", "TrainingConfig"]

#: the training losses (:data:`disenkg.training.link.LOSSES`)
LOSS_NAMES = ("bce", "softmax")
#: how tied scores are ranked (:mod:`disenkg.evaluation.ranks`)
RANK_TYPES = ("realistic", "optimistic", "pessimistic")
#: the plain command's built-in search (:mod:`disenkg.pipeline.search`)
SEARCH_MODES = ("auto", "on", "none")
#: fields that must be set before training starts (patience and min_epochs follow epochs)
RESOLVED = ("epochs", "batch_size", "lr")

T = "training"


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(Section):
    """Optimisation settings of a link-prediction run (``python -m disenkg.run link --help``
    explains each; the field names are the flags' names with ``_``)."""

    section = "training"

    seed: int = option(0, integer(0), group="run",
                       help="random seed (init, dropout, shuffling)")
    epochs: int | None = option(
        None, integer(1), derived=True, group=T,
        help="maximum training epochs (default: the preset's, else as many as fit "
             "--time-budget, in [20, 500])")
    time_budget: float = option(
        BUDGET_MINUTES, pos_float, group=T,
        help="minutes of training and validation the derived --epochs aim for (KGs without "
             "a preset; an estimate, not a hard stop)")
    search: str = option(
        "auto", one_of(SEARCH_MODES), group=T,
        help="the built-in search (docs, 'Training and defaults'): auto = on a KG without a "
             "preset where one epoch is cheap enough, try a few candidate settings on the "
             "validation split within half the time budget and train the best for the "
             "rest; on = always; none = train the settings as resolved. Settings you give "
             "are never searched")
    batch_size: int | None = option(
        None, integer(1), derived=True, group=T, search=Choice(128, 256, 512, 1024),
        help="1-N queries per step (default: the preset's, else the largest power of two "
             "giving >= 24 steps per epoch, in [32, 2048], at least 128 from 1024 training "
             "queries)")
    lr: float | None = option(
        None, pos_float, derived=True, group=T, search=Range(1e-4, 1e-2, log=True),
        help="Adam learning rate (default: the preset's, else 0.003 for batches < 1024 and "
             "0.001 above)")
    lr_decay: float = option(
        1.0, decay, group=T,
        help="the learning rate is --lr * LR_DECAY^(epoch - 1) in each epoch (ConvE's code: "
             "0.995; 1 = constant)")
    weight_decay: float = option(0.0, nonneg_float, group=T, help="Adam weight decay")
    loss: str = option(
        "bce", one_of(LOSS_NAMES), group=T,
        help="bce: 1-N binary cross-entropy against every entity (the paper's, the fused "
             "mixture op); softmax: 1-N cross-entropy of the softmax over all entities "
             "against the uniform distribution over a query's answers (LibKGE's KvsAll + "
             "CE; K = 1 or --order before, no --entity-shards)")
    label_smoothing: float = option(
        0.1, fraction, group=T, search=Range(0.0, 0.3),
        help="bce: eps in t = (1 - eps) y + 1/N (DisenKGAT/CompGCN convention); softmax: "
             "t = (1 - eps) y / |y| + eps / N")
    eval_every: int = option(1, integer(1), group=T, help="validate every N epochs")
    patience: int | None = option(
        None, integer(0), derived=True, group=T,
        help="stop after N validations without a better MRR, counted after --min-epochs "
             "(0 = never; default: the preset's, else max(20, epochs / 5))")
    min_epochs: int | None = option(
        None, integer(0), derived=True, group=T,
        help="epochs before patience starts counting (default: epochs / 5)")
    eval_batch_size: int = option(256, integer(1), group=T, help="queries per eval batch")
    rank_type: str = option("realistic", one_of(RANK_TYPES), group=T,
                            help="how tied scores are ranked in the headline metrics")
    loss_impl: str = option(
        "auto", one_of(OP_IMPLS["mixture_bce"]), group=T,
        help="the fused mixture-BCE loss (docs, 'Implementations'): native / chunked = "
             "logit tiles with the C / PyTorch element-wise code, triton = GPU kernels, "
             "eager = all (B, K, N) logits at once; auto = triton on CUDA, else native where "
             "it applies")
    loss_precision: str = option(
        "auto", one_of(PRECISIONS), group=T,
        help="the mixture-BCE GEMMs (chunked CPU path): fp32; bf16 (float32 tensors, "
             "bfloat16-rounded GEMM inputs, float32 accumulation and logits); auto = bf16 on "
             "CPUs that measurably multiply bf16 faster than fp32 (a probe cached per "
             "machine), else fp32 (see docs, 'Precision')")
    entity_shards: int = option(
        1, integer(1), group=T,
        help="under torchrun: split the entity table and the 1-N scoring over S ranks: each "
             "keeps 1/S of the per-entity parameters and their optimiser state and scores "
             "its batch slice against its entities; the processes (--nproc-per-node x "
             "--nnodes) form processes / S data-parallel batch slices; exact (docs, "
             "'Several processes'). 1 = data-parallel only; DisenKGAT's graph encoder is "
             "split by receiver, each shard exchanging the sender rows its edges need")
    partition: str = option(
        "range", one_of(PARTITIONS), group=T,
        help="how --entity-shards cuts the entity ids: range = equal contiguous ranges; "
             "degree = contiguous ranges receiving equal numbers of graph edges (DisenKGAT: "
             "balances the encoder's work; the halo each gives: docs, 'Several processes')")
    halo_recompute: bool = option(
        True, as_bool, negatable=True, group=T,
        help="with --entity-shards, DisenKGAT: hold only a shard's own encoder rows "
             "between forward and backward and exchange the sender rows of other shards "
             "again in backward (one more all-to-all per layer and step; the same rows); "
             "--no-halo-recompute holds them (more memory per rank, less communication)")
    #: show tqdm progress bars (the run's ``no_progress`` turned around)
    progress: bool = True

    def check(self) -> None:
        if self.loss == "softmax" and self.entity_shards > 1:
            raise ConfigError("loss: the softmax loss normalises over all entities and does "
                              f"not run entity-sharded; got entity_shards={self.entity_shards}")

    def resolved(self) -> TrainingConfig:
        """This configuration ready to train: ``patience`` and ``min_epochs`` left ``None``
        follow ``epochs`` (:func:`~disenkg.defaults.early_stopping`, the rule a KG-derived
        run uses).

        Raises:
            ConfigError: ``epochs``, ``batch_size`` or ``lr`` is still ``None``.
        """
        missing = [k for k in RESOLVED if getattr(self, k) is None]
        if missing:
            raise ConfigError(f"training settings {missing} are not set: give them, or "
                              "resolve the configuration against the KG "
                              "(disenkg.pipeline.LinkConfig.derive)")
        patience, min_epochs = early_stopping(self.epochs)
        changes = {k: v for k, v in (("patience", patience), ("min_epochs", min_epochs))
                   if getattr(self, k) is None}
        return self.replace(**changes) if changes else self
