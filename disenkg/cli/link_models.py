"""Registry of link-prediction models for the CLI: their flags, defaults and builders.

Flags whose default depends on the model (``--lr``, ``--batch-size``, scorer sizes and
dropouts) default to ``None`` on the parser and are filled from :attr:`ModelEntry.defaults`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from disenkg.cli.values import fraction, integer, nonneg_float, pos_float, real
from disenkg.datasets import KGDataset
from disenkg.defaults import BUDGET_MINUTES, KGStats, derive_defaults
from disenkg.errors import ConfigError
from disenkg.models import ConvE
from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import SCORERS, Scorer
from disenkg.ops.conv_head import IMPLS as HEAD_IMPLS
from disenkg.ops.impls import OP_IMPLS
from disenkg.ops.precision import PRECISIONS
from disenkg.utils import Registry

ENCODER_IMPLS = OP_IMPLS["disen_conv"]  # (disenkg.nn.conv.disen_conv.IMPLS)

__all__ = ["DERIVED_KEYS", "MODELS", "ModelEntry", "add_model_arguments", "check_shapes",
           "fill_defaults", "fix_bn0_scale"]


@dataclass(frozen=True)
class ModelEntry:
    """How the CLI builds one model from parsed flags."""

    build: Callable[[KGDataset, argparse.Namespace], nn.Module]
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)


MODELS: Registry[ModelEntry] = Registry("model")

# Scorer-specific dropouts (the authors' InteractE / DisenKGAT-ConvE); sizes, batch, lr and
# epochs come from the preset or from disenkg.defaults.
SCORER_DEFAULTS: dict[str, dict[str, Any]] = {
    "interacte": dict(feature_dropout=0.4, hidden_dropout=0.3),
    "conve": dict(feature_dropout=0.3, hidden_dropout=0.3, input_dropout=0.0),
}
#: keys whose default is derived from the KG's size (:func:`disenkg.defaults.derive_defaults`)
DERIVED_KEYS = ("batch_size", "lr", "channels", "k_h", "k_w", "num_filters", "kernel_size",
                "init_dim", "mi_weight", "embed_dim", "epochs", "patience", "min_epochs")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the scorers and of DisenKGAT (each explained in ``--help``)."""
    g = parser.add_argument_group("convolutional scorers (ConvE, InteractE)")
    g.add_argument("--embed-dim", type=integer(1), default=None,
                   help="ConvE baseline embedding size D = k_h * k_w (default: by KG size, "
                        "200 for >= 5000 entities)")
    g.add_argument("--k-h", type=integer(1), default=None,
                   help="height of the reshaped embedding image (default: by KG size)")
    g.add_argument("--k-w", type=integer(1), default=None,
                   help="width of the reshaped embedding image (default: by KG size)")
    g.add_argument("--num-filters", type=integer(1), default=None,
                   help="convolution filters (default: 32 ConvE baseline; DisenKGAT by KG "
                        "size: 200 for >= 5000 entities, else 32 / 16)")
    g.add_argument("--kernel-size", type=integer(1), default=None,
                   help="square kernel size (default: 3 ConvE baseline; DisenKGAT by KG "
                        "size: 9 InteractE / 7 ConvE for >= 5000 entities, else 5 / 3)")
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
    g.add_argument("--image-chunk", type=integer(1), default=256,
                   help="feature-map images per chunk of the chunked head (exact batch norm)")
    g.add_argument("--head-impl", default="auto", choices=list(HEAD_IMPLS),
                   help="the conv scorers' head (README, 'Implementations'): chunks of "
                        "--image-chunk images with the C (native) or PyTorch (chunked) patch "
                        "kernels, or all feature maps at once (eager); auto = eager (cuDNN) "
                        "on CUDA, else native where it applies")
    g.add_argument("--head-precision", default="auto", choices=list(PRECISIONS),
                   help="compute dtype of the conv scorers' GEMMs and feature maps: fp32; "
                        "bf16 (batch-norm statistics, outputs and gradients stay fp32; needs "
                        "a chunked --head-impl); auto (default) = bf16 on CPUs with AMX / "
                        "AVX512-BF16 matrix hardware, else fp32 (see README, 'Precision')")
    d = parser.add_argument_group("DisenKGAT")
    d.add_argument("--num-components", type=integer(1), default=3,
                   help="K, disentangled components")
    d.add_argument("--init-dim", type=integer(1), default=None,
                   help="base entity embedding size (default: by KG size, 100 / 50)")
    d.add_argument("--channels", type=integer(1), default=None,
                   help="F, size of each component (= scorer dim, must be k_h * k_w; "
                        "default: by KG size, 200 for >= 5000 entities, else 100 / 50)")
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
    d.add_argument("--mi-weight", type=nonneg_float, default=None,
                   help="weight of the dependence penalty (authors' alpha; default: 0.1 for "
                        ">= 5000 entities, else 0.01)")
    d.add_argument("--bn0-scale", default="learn", choices=["learn", "fixed"],
                   help="the conv scorer's input batch-norm scale: learned (the authors') or "
                        "fixed at 1 (removes the drift behind one-epoch validation "
                        "collapses; see README, 'Defaults')")
    d.add_argument("--mi-lr", type=pos_float, default=None,
                   help="learning rate of the CLUB estimators' optimiser (default: --lr)")
    d.add_argument("--mi-recompute", action=argparse.BooleanOptionalAction, default=True,
                   help="fit the CLUB estimators after each step on a fresh encoder pass "
                        "(the authors' schedule); --no-mi-recompute reuses the step's own "
                        "embeddings (no extra pass, but it diverged on UMLS: README "
                        "'Defaults'; kept for runs made with it)")
    d.add_argument("--encoder-impl", default="auto", choices=list(ENCODER_IMPLS),
                   help="the DisenConv layers (README, 'Implementations'): native = fused C "
                        "edge kernels (mult/cross messages with dot_weight/dot_emb logits, "
                        "CPU); chunked = edge chunks recomputed in backward; eager = all "
                        "edges at once; auto = native where it applies, else chunked")


def check_shapes(args: argparse.Namespace) -> None:
    """Cross-flag rules (the image must tile the vector); checked before any data is read
    for the values given, and again after the derived defaults are filled."""
    conv = args.model == "conve" or getattr(args, "scorer", None) in ("conve", "interacte")
    if not conv:
        return
    flag, dim = (("--embed-dim", args.embed_dim) if args.model == "conve"
                 else ("--channels", args.channels))
    if None in (dim, args.k_h, args.k_w):
        return  # derived later from the KG, consistently
    if args.k_h * args.k_w != dim:
        raise ConfigError(f"{flag} {dim} must equal --k-h * --k-w = {args.k_h} * {args.k_w} "
                          f"= {args.k_h * args.k_w} for a convolutional scorer")


def fill_defaults(args: argparse.Namespace, entry: ModelEntry, dataset: KGDataset
                  ) -> dict[str, tuple[Any, str]]:
    """Fills flags left at ``None``: size-derived ones from the KG
    (:func:`~disenkg.defaults.derive_defaults`), then the model's and its scorer's fixed
    defaults. Returns the derived values with their reasons."""
    given = {k: getattr(args, k, None) for k in DERIVED_KEYS}
    given["num_components"] = getattr(args, "num_components", 1) if args.model == \
        "disenkgat" else 1
    if args.model == "conve":
        for key in ("channels", "init_dim", "mi_weight"):
            given.pop(key)
    else:
        given.pop("embed_dim")
    large = 7 if getattr(args, "scorer", None) == "conve" else 9
    derived = derive_defaults(KGStats.of(dataset), model=args.model, given=given,
                              budget_minutes=getattr(args, "time_budget", BUDGET_MINUTES),
                              large_kernel=large)
    for key, (value, _) in derived.items():
        setattr(args, key, value)
    defaults = dict(entry.defaults)
    if args.model == "disenkgat":
        defaults.update(SCORER_DEFAULTS.get(args.scorer, {}))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if getattr(args, "mi_lr", None) is None:
        args.mi_lr = args.lr
    return derived


def fix_bn0_scale(model: nn.Module) -> int:
    """Freezes the input batch norm's scale of every conv scorer at 1 (``--bn0-scale
    fixed``); returns how many were frozen."""
    n = 0
    for m in model.modules():
        bn0 = getattr(m, "bn0", None)
        if isinstance(bn0, nn.BatchNorm2d) and bn0.weight is not None:
            with torch.no_grad():
                bn0.weight.fill_(1.0)
            bn0.weight.requires_grad_(False)
            n += 1
    return n


def _build_conve(ds: KGDataset, a: argparse.Namespace) -> ConvE:
    return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                 embedding_dim=a.embed_dim, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                 kernel_size=a.kernel_size, input_dropout=a.input_dropout,
                 feature_dropout=a.feature_dropout, hidden_dropout=a.hidden_dropout,
                 image_chunk=a.image_chunk, head_impl=a.head_impl,
                 precision=a.head_precision)


def _conv_scorer_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return dict(embedding_dim=a.channels, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                kernel_size=a.kernel_size, feature_dropout=a.feature_dropout,
                hidden_dropout=a.hidden_dropout, image_chunk=a.image_chunk,
                impl=a.head_impl, precision=a.head_precision)


#: how a registered scorer's constructor arguments come from the flags; a scorer not
#: listed here is built without arguments (what a newly registered one gets)
SCORER_KWARGS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "interacte": lambda a: dict(_conv_scorer_kwargs(a), num_perm=a.num_perm, seed=a.seed),
    "conve": lambda a: dict(_conv_scorer_kwargs(a), input_dropout=a.input_dropout),
    "transe": lambda a: dict(gamma=a.gamma),
    "transe_l1": lambda a: dict(gamma=a.gamma),
}


def build_scorer(a: argparse.Namespace) -> Scorer:
    """The per-component scorer named by ``--scorer``, from the :data:`SCORERS` registry."""
    kwargs = SCORER_KWARGS.get(a.scorer)
    return SCORERS.get(a.scorer)(**(kwargs(a) if kwargs is not None else {}))


def _build_disenkgat(ds: KGDataset, a: argparse.Namespace) -> nn.Module:
    from disenkg.models.disenkgat import DisenKGAT  # PyG: imported when needed

    edge_index, edge_type = ds.graph()
    return DisenKGAT(
        num_entities=ds.num_entities, num_relations=ds.num_relations,
        edge_index=edge_index, edge_type=edge_type,
        num_components=a.num_components, init_dim=a.init_dim, channels=a.channels,
        num_layers=a.num_layers, composition=a.composition, edge_attention=a.edge_attention,
        attention_dropout=a.attention_dropout, encoder_dropout=a.encoder_dropout,
        layer_bias=a.layer_bias, scorer=build_scorer(a),
        component_attention=a.component_attention, order=a.order,
        mi_estimator=None if a.mi_estimator == "none" else a.mi_estimator,
        mi_weight=a.mi_weight, mi_lr=a.mi_lr, mi_recompute=a.mi_recompute,
        encoder_impl=a.encoder_impl)


MODELS.register("disenkgat")(ModelEntry(
    _build_disenkgat, "DisenKGAT (Wu et al. 2021)"))
MODELS.register("conve")(ModelEntry(
    _build_conve, "ConvE with 1-N BCE (Dettmers et al. 2018)",
    defaults=dict(input_dropout=0.2, feature_dropout=0.2, hidden_dropout=0.3)))
