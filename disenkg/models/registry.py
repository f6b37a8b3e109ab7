"""The link-prediction models by name: each one's configuration class and builder.

A new model is one :class:`ModelSpec` registered here: a :class:`~disenkg.models.configs.
ModelConfig` subclass listing its settings and a ``build(dataset, config, seed=...)``
function. A new DisenKGAT scorer is registered in :data:`disenkg.nn.scorers.SCORERS`; its
constructor arguments come from :data:`SCORER_KWARGS` (a scorer not listed there is built
without arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from disenkg.datasets import KGDataset
from disenkg.models.configs import ConvEConfig, DisenKGATConfig, ModelConfig
from disenkg.models.conve import ConvE
from disenkg.nn.scorers import SCORERS, Scorer
from disenkg.utils import Registry

__all__ = ["MODELS", "SCORER_KWARGS", "ModelSpec", "build_scorer", "fix_bn0_scale"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its configuration section and how to build it.

    Args:
        config: the model's configuration class.
        build: ``build(dataset, config, *, seed)`` returns the model (on the CPU).
        help: one line for ``--help``.
    """

    config: type[ModelConfig]
    build: Callable[..., nn.Module]
    help: str


MODELS: Registry[ModelSpec] = Registry("model")


def fix_bn0_scale(model: nn.Module) -> int:
    """Freezes the input batch norm's scale of every conv scorer at 1 (``bn0_scale =
    "fixed"``); returns how many were frozen."""
    n = 0
    for m in model.modules():
        bn0 = getattr(m, "bn0", None)
        if isinstance(bn0, nn.BatchNorm2d) and bn0.weight is not None:
            with torch.no_grad():
                bn0.weight.fill_(1.0)
            bn0.weight.requires_grad_(False)
            n += 1
    return n


def _finish(model: nn.Module, c: ModelConfig) -> nn.Module:
    if c.is_conv() and getattr(c, "bn0_scale", "learn") == "fixed":
        fix_bn0_scale(model)
    return model


def _build_conve(ds: KGDataset, c: ConvEConfig, *, seed: int = 0) -> ConvE:
    return _finish(ConvE(
        num_entities=ds.num_entities, num_relations=ds.num_relations,
        embedding_dim=c.embed_dim, k_h=c.k_h, k_w=c.k_w, num_filters=c.num_filters,
        kernel_size=c.kernel_size, input_dropout=c.input_dropout,
        feature_dropout=c.feature_dropout, hidden_dropout=c.hidden_dropout,
        image_chunk=c.image_chunk, head_impl=c.head_impl, precision=c.head_precision), c)


def _conv_scorer_kwargs(c: DisenKGATConfig) -> dict[str, Any]:
    return dict(embedding_dim=c.channels, k_h=c.k_h, k_w=c.k_w, num_filters=c.num_filters,
                kernel_size=c.kernel_size, feature_dropout=c.feature_dropout,
                hidden_dropout=c.hidden_dropout, image_chunk=c.image_chunk,
                impl=c.head_impl, precision=c.head_precision)


#: how a registered scorer's constructor arguments come from the configuration (and the
#: run's seed); a scorer not listed here is built without arguments
SCORER_KWARGS: dict[str, Callable[[DisenKGATConfig, int], dict[str, Any]]] = {
    "interacte": lambda c, seed: dict(_conv_scorer_kwargs(c), num_perm=c.num_perm, seed=seed),
    "conve": lambda c, seed: dict(_conv_scorer_kwargs(c), input_dropout=c.input_dropout),
    "transe": lambda c, seed: dict(gamma=c.gamma),
    "transe_l1": lambda c, seed: dict(gamma=c.gamma),
}


def build_scorer(c: DisenKGATConfig, *, seed: int = 0) -> Scorer:
    """The per-component scorer named by ``c.scorer``, from the :data:`SCORERS` registry."""
    kwargs = SCORER_KWARGS.get(c.scorer)
    return SCORERS.get(c.scorer)(**(kwargs(c, seed) if kwargs is not None else {}))


def _build_disenkgat(ds: KGDataset, c: DisenKGATConfig, *, seed: int = 0) -> nn.Module:
    from disenkg.models.disenkgat import DisenKGAT  # PyG: imported when needed

    edge_index, edge_type = ds.graph()
    with_mi = c.mi_estimator != "none"
    return _finish(DisenKGAT(
        num_entities=ds.num_entities, num_relations=ds.num_relations,
        edge_index=edge_index, edge_type=edge_type,
        num_components=c.num_components, init_dim=c.init_dim, channels=c.channels,
        num_layers=c.num_layers, composition=c.composition, edge_attention=c.edge_attention,
        attention_dropout=c.attention_dropout, encoder_dropout=c.encoder_dropout,
        layer_bias=c.layer_bias, scorer=build_scorer(c, seed=seed),
        component_attention=c.component_attention, order=c.order,
        mi_estimator=c.mi_estimator if with_mi else None,
        mi_weight=c.mi_weight if with_mi else 0.0,
        mi_lr=c.mi_lr if with_mi and c.mi_lr is not None else 1e-3,
        mi_recompute=c.mi_recompute, encoder_impl=c.encoder_impl), c)


MODELS.register("disenkgat")(ModelSpec(DisenKGATConfig, _build_disenkgat,
                                       "DisenKGAT (Wu et al. 2021)"))
MODELS.register("conve")(ModelSpec(ConvEConfig, _build_conve,
                                   "ConvE with 1-N BCE (Dettmers et al. 2018)"))
