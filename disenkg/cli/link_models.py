"""Registry of link-prediction models for the CLI: their flags and how to build them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from disenkg.datasets import KGDataset
from disenkg.models import ConvE
from disenkg.utils import Registry

__all__ = ["MODELS", "ModelEntry", "add_scorer_arguments"]


@dataclass(frozen=True)
class ModelEntry:
    """How the CLI builds one model from parsed flags."""

    build: Callable[[KGDataset, argparse.Namespace], nn.Module]
    help: str


MODELS: Registry[ModelEntry] = Registry("model")


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the convolutional scorers (ConvE, InteractE) shared by all models."""
    g = parser.add_argument_group("convolutional scorer")
    g.add_argument("--embed-dim", type=int, default=200,
                   help="scorer embedding size D = k_h * k_w (default: %(default)s)")
    g.add_argument("--k-h", type=int, default=20,
                   help="height of the reshaped embedding image (default: %(default)s)")
    g.add_argument("--k-w", type=int, default=10,
                   help="width of the reshaped embedding image (default: %(default)s)")
    g.add_argument("--num-filters", type=int, default=32,
                   help="convolution channels (default: %(default)s)")
    g.add_argument("--kernel-size", type=int, default=3,
                   help="square convolution kernel size (default: %(default)s)")
    g.add_argument("--input-dropout", type=float, default=0.2,
                   help="dropout on the scorer input image (default: %(default)s)")
    g.add_argument("--feature-dropout", type=float, default=0.2,
                   help="2-D dropout on convolution feature maps (default: %(default)s)")
    g.add_argument("--hidden-dropout", type=float, default=0.3,
                   help="dropout after the scorer projection (default: %(default)s)")


def _build_conve(ds: KGDataset, a: argparse.Namespace) -> ConvE:
    return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                 embedding_dim=a.embed_dim, k_h=a.k_h, k_w=a.k_w, num_filters=a.num_filters,
                 kernel_size=a.kernel_size, input_dropout=a.input_dropout,
                 feature_dropout=a.feature_dropout, hidden_dropout=a.hidden_dropout)


MODELS.register("conve")(ModelEntry(_build_conve, "ConvE with 1-N BCE (Dettmers et al. 2018)"))
