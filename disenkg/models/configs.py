"""Configuration sections of the link-prediction models, one class per model.

Each class lists exactly the settings its model reads; :mod:`disenkg.models.registry`
registers it together with the model's builder. A setting that applies only to some
variants of a model (InteractE's ``num_perm``, TransE's ``gamma``, the conv scorers' image
sizes) names its condition in :attr:`ModelConfig.CONDITIONS`: where the condition does not
hold the setting is not part of the run (not recorded in ``config.json``), and giving it
explicitly is an error (:func:`disenkg.pipeline.LinkConfig.resolve`).

Sizes marked *derived* default to ``None`` and are filled from the KG's size
(:mod:`disenkg.defaults`) unless a preset, a config file or an argument sets them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from disenkg.config.options import Section, option
from disenkg.config.rules import as_bool, fraction, integer, nonneg_float, one_of, pos_float, real
from disenkg.config.search import Choice, Range
from disenkg.errors import ConfigError
from disenkg.ops.impls import OP_IMPLS
from disenkg.ops.precision import PRECISIONS

__all__ = ["CONV_SCORERS", "ConvEConfig", "DisenKGATConfig", "ModelConfig"]

#: the per-component scorers that are convolutional heads (image sizes, filters, batch norm)
CONV_SCORERS = ("conve", "interacte")
CONV = "convolutional scorers (ConvE, InteractE)"
DISEN = "DisenKGAT"


def _scorers() -> list[str]:
    from disenkg.nn.scorers import SCORERS

    return SCORERS.names()


def _registry_names(module: str, name: str, extra: tuple[str, ...] = ()) -> Callable[[], list]:
    def names() -> list[str]:
        import importlib

        return getattr(importlib.import_module(module), name).names() + list(extra)

    return names


class ModelConfig(Section):
    """Base of the model sections: a registered name, conditional settings, defaults that
    depend on other settings and the cross-field shape rule."""

    #: the model's name in :data:`~disenkg.models.registry.MODELS`
    name: ClassVar[str] = ""
    #: the field holding the vector size an image of ``k_h x k_w`` must tile
    DIM_FIELD: ClassVar[str] = ""

    def is_conv(self) -> bool:
        return False

    def check(self) -> None:
        """The image must tile the vector: ``k_h * k_w`` = the vector size (checked for
        the values given; derived ones are consistent by construction)."""
        if not self.is_conv():
            return
        dim = getattr(self, self.DIM_FIELD)
        if None in (dim, self.k_h, self.k_w):  # type: ignore[attr-defined]
            return
        kh, kw = self.k_h, self.k_w  # type: ignore[attr-defined]
        if kh * kw != dim:
            flag = "--" + self.DIM_FIELD.replace("_", "-")
            raise ConfigError(f"{flag} {dim} must equal --k-h * --k-w = {kh} * {kw} = "
                              f"{kh * kw} for a convolutional scorer")
        ks = self.kernel_size  # type: ignore[attr-defined]
        if ks is not None and ks > min(2 * kh, kw):  # two stacked k_h x k_w images
            raise ConfigError(f"--kernel-size {ks} exceeds the image of the convolutional "
                              f"scorer ({2 * kh} x {kw})")


def _k_h() -> Any:
    return option(None, integer(1), derived=True, group=CONV,
                  help="height of the reshaped embedding image (default: by KG size)")


def _k_w() -> Any:
    return option(None, integer(1), derived=True, group=CONV,
                  help="width of the reshaped embedding image (default: by KG size)")


def _num_filters() -> Any:
    return option(None, integer(1), derived=True, group=CONV, search=Choice(16, 32, 64, 128),
                  help="convolution filters (default: 32 ConvE baseline; DisenKGAT by KG "
                       "size: 200 for >= 5000 entities, else 32 / 16)")


def _kernel_size() -> Any:
    return option(None, integer(1), derived=True, group=CONV,
                  help="square kernel size (default: 3 ConvE baseline; DisenKGAT by KG size: "
                       "9 InteractE / 7 ConvE for >= 5000 entities, else 5 / 3)")


def _input_dropout(default: float | None) -> Any:
    return option(default, fraction, nullable=default is None, group=CONV,
                  search=Range(0.0, 0.5),
                  help="dropout on the scorer's input image (default: 0.2 ConvE baseline, 0 "
                       "DisenKGAT-ConvE)")


def _feature_dropout(default: float | None) -> Any:
    return option(default, fraction, nullable=default is None, group=CONV,
                  search=Range(0.0, 0.5),
                  help="2-D dropout on feature maps (default: 0.2 ConvE, 0.4 InteractE, 0.3 "
                       "DisenKGAT-ConvE)")


def _hidden_dropout(default: float | None) -> Any:
    return option(default, fraction, nullable=default is None, group=CONV,
                  search=Range(0.0, 0.5),
                  help="dropout after the scorer projection (default: 0.3)")


def _image_chunk() -> Any:
    return option(256, integer(1), group=CONV,
                  help="feature-map images per chunk of the chunked head (exact batch norm)")


def _head_impl() -> Any:
    return option("auto", one_of(OP_IMPLS["conv_head"]), group=CONV,
                  help="the conv scorers' head (docs, 'Implementations'): chunks of "
                       "--image-chunk images with the C (native) or PyTorch (chunked) patch "
                       "kernels, or all feature maps at once (eager); auto = eager (cuDNN) on "
                       "CUDA, else native where it applies")


def _head_precision() -> Any:
    return option("auto", one_of(PRECISIONS), group=CONV,
                  help="compute dtype of the conv scorers' GEMMs and feature maps: fp32; bf16 "
                       "(batch-norm statistics, outputs and gradients stay fp32; needs a "
                       "chunked --head-impl); auto = bf16 on CPUs that measurably "
                       "multiply bf16 faster than fp32 (a probe cached per machine), "
                       "else fp32 (see docs, 'Precision')")


def _bn0_scale() -> Any:
    return option("learn", one_of(("learn", "fixed")), group=DISEN,
                  help="the conv scorer's input batch-norm scale: learned (the authors') or "
                       "fixed at 1 (removes the drift behind one-epoch validation collapses; "
                       "see docs, 'Defaults')")


@dataclass(frozen=True, kw_only=True)
class ConvEConfig(ModelConfig):
    """ConvE with 1-N BCE (Dettmers et al. 2018): one embedding per entity, a 2-D
    convolution over the stacked (subject, relation) image."""

    section = "model"
    name = "conve"
    DIM_FIELD = "embed_dim"

    embed_dim: int | None = option(
        None, integer(1), derived=True, group=CONV, search=Choice(100, 200),
        help="ConvE baseline embedding size D = k_h * k_w (default: by KG size, 200 for >= "
             "5000 entities)")
    k_h: int | None = _k_h()
    k_w: int | None = _k_w()
    num_filters: int | None = _num_filters()
    kernel_size: int | None = _kernel_size()
    input_dropout: float = _input_dropout(0.2)
    feature_dropout: float = _feature_dropout(0.2)
    hidden_dropout: float = _hidden_dropout(0.3)
    image_chunk: int = _image_chunk()
    head_impl: str = _head_impl()
    head_precision: str = _head_precision()
    bn0_scale: str = _bn0_scale()

    def is_conv(self) -> bool:
        return True


def _conv_scorer(v: Mapping[str, Any]) -> bool:
    return v.get("scorer") in CONV_SCORERS


def _with_mi(v: Mapping[str, Any]) -> bool:
    return v.get("mi_estimator") != "none"


#: a DisenKGAT scorer's own dropout defaults (the authors' InteractE / DisenKGAT-ConvE)
SCORER_DROPOUTS: dict[str, dict[str, float]] = {
    "interacte": dict(feature_dropout=0.4, hidden_dropout=0.3),
    "conve": dict(feature_dropout=0.3, hidden_dropout=0.3, input_dropout=0.0),
}


@dataclass(frozen=True, kw_only=True)
class DisenKGATConfig(ModelConfig):
    """DisenKGAT (Wu et al. 2021): K-component entity embeddings from relation-aware
    message passing, a per-component scorer mixed over components, MI regularisation."""

    section = "model"
    name = "disenkgat"
    DIM_FIELD = "channels"
    CONDITIONS = {
        **{k: _conv_scorer for k in ("k_h", "k_w", "num_filters", "kernel_size",
                                     "feature_dropout", "hidden_dropout", "image_chunk",
                                     "head_impl", "head_precision", "bn0_scale")},
        "input_dropout": lambda v: v.get("scorer") == "conve",
        "num_perm": lambda v: v.get("scorer") == "interacte",
        "gamma": lambda v: str(v.get("scorer")).startswith("transe"),
        **{k: _with_mi for k in ("mi_weight", "mi_lr", "mi_recompute")},
    }

    num_components: int = option(3, integer(1), group=DISEN, search=Choice(1, 2, 3, 4),
                                 help="K, disentangled components")
    init_dim: int | None = option(
        None, integer(1), derived=True, group=DISEN, search=Choice(50, 100, 200),
        help="base entity embedding size (default: by KG size, 100 / 50)")
    channels: int | None = option(
        None, integer(1), derived=True, group=DISEN, search=Choice(50, 100, 200),
        help="F, size of each component (= scorer dim, must be k_h * k_w; default: by KG "
             "size, 200 for >= 5000 entities, else 100 / 50)")
    num_layers: int = option(1, integer(0), group=DISEN, help="stacked DisenConv layers")
    composition: str = option(
        "cross", one_of(_registry_names("disenkg.nn.composition", "COMPOSITIONS")),
        group=DISEN, help="composition of neighbour and relation in messages")
    edge_attention: str = option(
        "dot_weight", one_of(_registry_names("disenkg.nn.edge_attention", "EDGE_ATTENTIONS")),
        group=DISEN, help="edge attention logits of the layer")
    attention_dropout: float = option(
        0.4, fraction, group=DISEN, search=Range(0.0, 0.5),
        help="dropout on edge attention weights (authors' gcn_drop)")
    encoder_dropout: float = option(
        0.3, fraction, group=DISEN, search=Range(0.0, 0.5),
        help="dropout on the encoder output (authors' hid_drop / iinp_drop)")
    layer_bias: bool = option(False, as_bool, group=DISEN, help="learned bias in each layer")
    scorer: str = option("interacte", one_of(_scorers), group=DISEN,
                         help="per-component scoring function")
    component_attention: str = option(
        "dot_rel",
        one_of(_registry_names("disenkg.nn.component_attention", "COMPONENT_ATTENTIONS")),
        group=DISEN, help="attention over components of a query (authors' score_method)")
    order: str = option("after", one_of(("after", "before")), group=DISEN,
                        help="mix component probabilities (after) or logits (before)")
    mi_estimator: str = option(
        "club_b", one_of(_registry_names("disenkg.nn.mi", "MI_ESTIMATORS", ("none",))),
        group=DISEN, help="dependence penalty between components ('none' disables it)")
    mi_weight: float | None = option(
        None, nonneg_float, derived=True, group=DISEN, search=Range(1e-3, 1.0, log=True),
        help="weight of the dependence penalty (authors' alpha; default: 0.1 for >= 5000 "
             "entities, else 0.01)")
    mi_lr: float | None = option(
        None, pos_float, nullable=True, group=DISEN,
        help="learning rate of the CLUB estimators' optimiser (default: --lr)")
    mi_recompute: bool = option(
        True, as_bool, negatable=True, group=DISEN,
        help="fit the CLUB estimators after each step on a fresh encoder pass (the "
             "authors' schedule); --no-mi-recompute reuses the step's own embeddings (no "
             "extra pass, but it diverged on UMLS: docs, 'Defaults'; kept for runs made "
             "with it)")
    encoder_impl: str = option(
        "auto", one_of(OP_IMPLS["disen_conv"]), group=DISEN,
        help="the DisenConv layers (docs, 'Implementations'): native = fused C edge "
             "kernels (mult/cross messages with dot_weight/dot_emb logits, CPU); chunked = "
             "edge chunks recomputed in backward; eager = all edges at once; auto = native "
             "where it applies, else chunked")
    # the per-component scorer's settings
    k_h: int | None = _k_h()
    k_w: int | None = _k_w()
    num_filters: int | None = _num_filters()
    kernel_size: int | None = _kernel_size()
    input_dropout: float | None = _input_dropout(None)
    feature_dropout: float | None = _feature_dropout(None)
    hidden_dropout: float | None = _hidden_dropout(None)
    num_perm: int = option(1, integer(1), group=CONV,
                           help="InteractE: number of checkered feature permutations")
    gamma: float = option(9.0, real, group=CONV, help="TransE: initial margin gamma")
    image_chunk: int = _image_chunk()
    head_impl: str = _head_impl()
    head_precision: str = _head_precision()
    bn0_scale: str = _bn0_scale()

    @classmethod
    def variant_defaults(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(SCORER_DROPOUTS.get(values.get("scorer", "interacte"), {}))
        if values.get("mi_lr") is None and values.get("lr") is not None:
            out["mi_lr"] = values["lr"]
        return out

    def is_conv(self) -> bool:
        return self.scorer in CONV_SCORERS
