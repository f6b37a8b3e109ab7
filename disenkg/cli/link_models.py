"""Registry of link-prediction models for the CLI: their flags, defaults and builders.

Flags whose default depends on the model (``--lr``, ``--batch-size``, scorer sizes and
dropouts) default to ``None`` on the parser and are filled from :attr:`ModelEntry.defaults`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from disenkg.cli.values import fraction, integer, nonneg_float, pos_float, real
from disenkg.datasets import KGDataset
from disenkg.errors import ConfigError
from disenkg.models import ConvE, DisenKGAT
from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.conv.disen_conv import IMPLS as CONV_IMPLS
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import SCORERS, Scorer
from disenkg.ops.precision import PRECISIONS
from disenkg.utils import Registry

__all__ = ["MODELS", "ModelEntry", "add_model_arguments", "check_shapes", "fill_defaults"]


@dataclass(frozen=True)
class ModelEntry:
    """How the CLI builds one model from parsed flags."""

    build: Callable[[KGDataset, argparse.Namespace], nn.Module]
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)


MODELS: Registry[ModelEntry] = Registry("model")

# Scorer-specific defaults (the authors' InteractE / DisenKGAT-ConvE and original ConvE).
SCORER_DEFAULTS: dict[str, dict[str, Any]] = {
    "interacte": dict(num_filters=200, kernel_size=9, feature_dropout=0.4,
                      hidden_dropout=0.3),
    "conve": dict(num_filters=200, kernel_size=7, feature_dropout=0.3, hidden_dropout=0.3,
                  input_dropout=0.0),
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the scorers and of DisenKGAT (each explained in ``--help``)."""
    g = parser.add_argument_group("convolutional scorers (ConvE, InteractE)")
    g.add_argument("--embed-dim", type=integer(1), default=200,
                   help="ConvE baseline embedding size D = k_h * k_w")
    g.add_argument("--k-h", type=integer(1), default=20,
                   help="height of the reshaped embedding image")
    g.add_argument("--k-w", type=integer(1), default=10,
                   help="width of the reshaped embedding image")
    g.add_argument("--num-filters", type=integer(1), default=None,
                   help="convolution filters (default: 32 ConvE baseline, 200 InteractE / "
                        "DisenKGAT-ConvE)")
    g.add_argument("--kernel-size", type=integer(1), default=None,
                   help="square kernel size (default: 3 ConvE baseline, 9 InteractE, 7 "
                        "DisenKGAT-ConvE)")
    g.add_argument("--input-dropout", type=fraction, default=None,
                   help="dropout on the scorer's input image (default: 0.2 ConvE baseline, 0 "
                        "DisenKGAT-ConvE)")
    g.add_argument("--feature-dropout", type=fraction, default=None,
                   help="2-D dropout on feature maps (default: 0.2 ConvE, 0.4 InteractE, "
                        "0.3 DisenKGAT-ConvE)")
    g.add_argument("--hidden-dropout", type=fraction, default=None,
                   help="dropout after the scorer projection (default: 0.3)")
    g.add_argument("--num-perm", type=integer(1), default=1,
                   help="InteractE: number of checkered feature permutations")
    g.add_argument("--gamma", type=real, default=9.0, help="TransE: initial margin gamma")
    g.add_argument("--image-chunk", type=integer(0), default=256,
                   help="scorer feature-map images per checkpointed chunk in training (exact "
                        "batch norm; 0 = all at once)")
    g.add_argument("--head-precision", default="auto", choices=list(PRECISIONS),
                   help="compute dtype of the conv scorers' GEMMs and feature maps: fp32; "
                        "bf16 (batch-norm statistics, outputs and gradients stay fp32; needs "
                        "--image-chunk); auto (default) = bf16 on CPUs with AMX / "
                        "AVX512-BF16 matrix hardware, else fp32 (see README, 'Precision')")
    d = parser.add_argument_group("DisenKGAT")
    d.add_argument("--num-components", type=integer(1), default=3,
                   help="K, disentangled components")
    d.add_argument("--init-dim", type=integer(1), default=100,
                   help="base entity embedding size")
    d.add_argument("--channels", type=integer(1), default=200,
                   help="F, size of each component (= scorer dim, must be k_h * k_w)")
    d.add_argument("--num-layers", type=integer(0), default=1, help="stacked DisenConv layers")
    d.add_argument("--composition", default="cross", choices=COMPOSITIONS.names(),
                   help="composition of neighbour and relation in messages")
    d.add_argument("--edge-attention", default="dot_weight", choices=EDGE_ATTENTIONS.names(),
                   help="edge attention logits of the layer")
    d.add_argument("--attention-dropout", type=fraction, default=0.4,
                   help="dropout on edge attention weights (authors' gcn_drop)")
    d.add_argument("--encoder-dropout", type=fraction, default=0.3,
                   help="dropout on the encoder output (authors' hid_drop / iinp_drop)")
    d.add_argument("--layer-bias", action="store_true", help="learned bias in each layer")
    d.add_argument("--scorer", default="interacte", choices=SCORERS.names(),
                   help="per-component scoring function")
    d.add_argument("--component-attention", default="dot_rel",
                   choices=COMPONENT_ATTENTIONS.names(),
                   help="attention over components of a query (authors' score_method)")
    d.add_argument("--order", default="after", choices=["after", "before"],
                   help="mix component probabilities (after) or logits (before)")
    d.add_argument("--mi-estimator", default="club_b",
                   choices=MI_ESTIMATORS.names() + ["none"],
                   help="dependence penalty between components ('none' disables it)")
    d.add_argument("--mi-weight", type=nonneg_float, default=0.1,
                   help="weight of the dependence penalty (authors' alpha)")
    d.add_argument("--mi-lr", type=pos_float, default=None,
                   help="learning rate of the CLUB estimators' optimiser (default: --lr)")
    d.add_argument("--mi-recompute", action="store_true",
                   help="re-run the encoder for the estimator step (original behaviour) "
                        "instead of reusing the main step's embeddings")
    d.add_argument("--conv-impl", default="auto", choices=list(CONV_IMPLS),
                   help="layer schedule: fused native edge kernels (mult/cross messages with "
                        "dot_weight/dot_emb logits, CPU), edge chunks recomputed in backward, "
                        "all edges at once, or auto (fused where it applies, else chunked)")


def check_shapes(args: argparse.Namespace) -> None:
    """Cross-flag rules checked before any data is read (the image must tile the vector)."""
    conv = args.model == "conve" or getattr(args, "scorer", None) in ("conve", "interacte")
    if not conv:
        return
    flag, dim = (("--embed-dim", args.embed_dim) if args.model == "conve"
                 else ("--channels", args.channels))
    if args.k_h * args.k_w != dim:
        raise ConfigError(f"{flag} {dim} must equal --k-h * --k-w = {args.k_h} * {args.k_w} "
                          f"= {args.k_h * args.k_w} for a convolutional scorer")


def fill_defaults(args: argparse.Namespace, entry: ModelEntry) -> None:
    """Fills flags left at ``None`` from the model's (and its scorer's) defaults."""
    defaults = dict(entry.defaults)
    if args.model == "disenkgat":
        defaults.update(SCORER_DEFAULTS.get(args.scorer, {}))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if getattr(args, "mi_lr", None) is None:
        args.mi_lr = args.lr


def _build_conve(ds: KGDataset, a: argparse.Namespace) -> ConvE:
    return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                 embedding_dim=a.embed_dim, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                 kernel_size=a.kernel_size, input_dropout=a.input_dropout,
                 feature_dropout=a.feature_dropout, hidden_dropout=a.hidden_dropout,
                 image_chunk=a.image_chunk or None, precision=a.head_precision)


def build_scorer(a: argparse.Namespace) -> Scorer:
    """The per-component scorer named by ``--scorer``."""
    cls = SCORERS.get(a.scorer)
    if a.scorer == "interacte":
        return cls(dim=a.channels, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                   kernel_size=a.kernel_size, num_perm=a.num_perm,
                   feature_dropout=a.feature_dropout, hidden_dropout=a.hidden_dropout,
                   seed=a.seed, image_chunk=a.image_chunk or None,
                   precision=a.head_precision)
    if a.scorer == "conve":
        return cls(embedding_dim=a.channels, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                   kernel_size=a.kernel_size, input_dropout=a.input_dropout,
                   feature_dropout=a.feature_dropout, hidden_dropout=a.hidden_dropout,
                   image_chunk=a.image_chunk or None, precision=a.head_precision)
    if a.scorer.startswith("transe"):
        return cls(gamma=a.gamma)
    return cls()


def _build_disenkgat(ds: KGDataset, a: argparse.Namespace) -> DisenKGAT:
    edge_index, edge_type = ds.graph()
    # The authors' convention: the head of (h, r, t) receives the tail's message via r.
    return DisenKGAT(
        num_entities=ds.num_entities, num_relations=ds.num_relations,
        edge_index=edge_index.flip(0), edge_type=edge_type,
        num_components=a.num_components, init_dim=a.init_dim, channels=a.channels,
        num_layers=a.num_layers, composition=a.composition, edge_attention=a.edge_attention,
        attention_dropout=a.attention_dropout, encoder_dropout=a.encoder_dropout,
        layer_bias=a.layer_bias, scorer=build_scorer(a),
        component_attention=a.component_attention, order=a.order,
        mi_estimator=None if a.mi_estimator == "none" else a.mi_estimator,
        mi_weight=a.mi_weight, mi_lr=a.mi_lr, mi_recompute=a.mi_recompute,
        conv_impl=a.conv_impl)


MODELS.register("disenkgat")(ModelEntry(
    _build_disenkgat, "DisenKGAT (Wu et al. 2021)",
    defaults=dict(lr=0.001, batch_size=2048)))
MODELS.register("conve")(ModelEntry(
    _build_conve, "ConvE with 1-N BCE (Dettmers et al. 2018)",
    defaults=dict(lr=0.003, batch_size=128, num_filters=32, kernel_size=3, input_dropout=0.2,
                  feature_dropout=0.2, hidden_dropout=0.3)))
