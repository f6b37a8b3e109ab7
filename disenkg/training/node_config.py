"""Configuration of the node-level tasks: the run section and one section per task.

``python -m disenkg.run node`` generates its flags from these sections (one flag per
field) and :func:`disenkg.api.train_node` takes the same names. A setting of another task
(``--task array --encoder mlp``) is an error when given as a flag or argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from disenkg.config.options import Section, option
from disenkg.config.rules import as_bool, integer, nonneg_float, one_of, pos_float, text
from disenkg.config.sections import LOG_LEVELS
from disenkg.nn.encoders.registry import NODE_ENCODERS

__all__ = ["TASKS", "ArrayTaskConfig", "ClassificationConfig", "NodeRunConfig",
           "PlanetoidTaskConfig", "VGAEConfig"]

#: the node tasks, in ``--help`` order
TASKS = ("classification", "link", "array")


@dataclass(frozen=True, kw_only=True)
class NodeRunConfig(Section):
    """Which task, how many seeds, where the run goes and how it is shown."""

    section = "run"

    task: str = option(
        "classification", one_of(TASKS),
        help="classification: Planetoid node labels; link: VGAE with the variational GAT; "
             "array: (G, S, T, N, F) arrays with a node graph")
    seeds: int = option(10, integer(1), help="repeat over seeds 0..N-1")
    device: str = option("auto", text, help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    output_dir: str | None = option(
        None, text, nullable=True,
        help="the run directory (default: runs/node-TASK-DATASET); refused if it already "
             "holds a run, unless --overwrite")
    overwrite: bool = option(False, as_bool,
                             help="delete the run files already in OUTPUT_DIR and start afresh")
    no_progress: bool = option(False, as_bool, help="hide tqdm progress bars")
    log_level: str = option("INFO", one_of(LOG_LEVELS, upper=True),
                            help="logging level (DEBUG also shows tracebacks of user errors)")
    debug: bool = option(False, as_bool,
                         help="show the full traceback of errors in your input")


@dataclass(frozen=True, kw_only=True)
class PlanetoidTaskConfig(Section):
    """What the Planetoid tasks share: the graph, the epochs and patience, the GAT trunk's
    size (hidden units per head and heads: the GAT paper's; not flags)."""

    dataset: str = option("Cora", text, group="Planetoid tasks",
                          help="Planetoid name (Cora, CiteSeer, PubMed)")
    root: str | None = option(
        None, text, nullable=True, group="Planetoid tasks",
        help="folder holding NAME/raw/ind.name.* (default: $DISENKG_DATA/planetoid, then the "
             "bundled disenkg/data/planetoid)")
    epochs: int = option(1000, integer(1), group="training", help="maximum epochs")
    patience: int = option(100, integer(1), group="Planetoid tasks",
                           help="early stopping patience in epochs (classification, link)")
    hidden: int = 8
    heads: int = 8


@dataclass(frozen=True, kw_only=True)
class ClassificationConfig(PlanetoidTaskConfig):
    """Planetoid node classification (GAT settings of Velickovic et al. 2018 on Cora)."""

    section = "classification"

    encoder: str = option("gat", one_of(NODE_ENCODERS.names), group="Planetoid tasks",
                          help="classification encoder (see NODE_ENCODERS)")
    lr: float = option(0.005, pos_float, group="training", help="Adam learning rate")
    weight_decay: float = option(5e-4, nonneg_float, group="training",
                                 help="Adam weight decay (classification)")
    #: the GAT's dropout (the paper's; not a flag)
    dropout: float = 0.6


@dataclass(frozen=True, kw_only=True)
class VGAEConfig(PlanetoidTaskConfig):
    """VGAE link prediction on a Planetoid graph with the variational GAT encoder."""

    section = "link"

    recon: str = option(
        "full", one_of(("sampled", "full")), group="Planetoid tasks",
        help="link task: VGAE reconstruction loss; full = the paper's exact all-pairs BCE "
             "through the fused op (memory linear in nodes), sampled = PyG's "
             "one-negative-per-edge estimator")
    select: str = option(
        "auc+ap", one_of(("auc", "auc+ap")), group="Planetoid tasks",
        help="link task: the validation score that picks the checkpoint and drives early "
             "stopping")
    lr: float = option(0.002, pos_float, group="training",
                       help="Adam learning rate (0.002 chosen by validation AUC on Cora)")
    #: the latent size (not a flag)
    latent: int = 16


@dataclass(frozen=True, kw_only=True)
class ArrayTaskConfig(Section):
    """(groups, samples, time, nodes, features) arrays with a node graph."""

    section = "array"

    features: str | None = option(None, text, nullable=True, group="array task",
                                  help="features .npy of shape (G, S, T, N, F)")
    edges: str | None = option(
        None, text, nullable=True, group="array task",
        help="node graph: .npy (2, E) / (E, 2) or .csv with src,dst")
    targets: str | None = option(None, text, nullable=True, group="array task",
                                 help="targets .npy of shape (G, S, N) or (G, S)")
    target_kind: str = option("regression", one_of(("regression", "classification")),
                              group="array task", help="what the targets are")
    max_samples: int | None = option(
        None, integer(3), nullable=True, group="array task",
        help="train/valid/test on a random subset of this many (g, s) samples")
    batch_size: int = option(32, integer(1), group="array task", help="samples per batch")
    latent: int = option(32, integer(4), group="array task",
                         help="latent size of the encoders")
    epochs: int = option(20, integer(1), group="training", help="maximum epochs")
    lr: float = option(0.003, pos_float, group="training", help="Adam learning rate")
    #: weight of the variational GAT's KL term (not a flag)
    kl_weight: float = 1e-3
