"""The search space of a model: the settings whose :func:`~disenkg.config.option` declares
a ``search`` range (:mod:`disenkg.config.search`), read off the training section and the
model's own section, less those the person fixed.

The default space (``python -m disenkg.run tune --print-space`` prints it for a model):

* training: ``lr`` (1e-4 .. 1e-2, log), ``batch_size`` (128 .. 1024), ``label_smoothing``
  (0 .. 0.3);
* DisenKGAT: K = ``num_components`` (1 .. 4), ``init_dim`` and ``channels`` (50, 100,
  200), ``attention_dropout`` and ``encoder_dropout`` (0 .. 0.5), ``mi_weight`` (1e-3 .. 1,
  log; with an MI estimator), and the conv scorer's ``num_filters`` and dropouts;
* ConvE: ``embed_dim`` (100, 200), ``num_filters`` (16 .. 128), its three dropouts.

A setting given as a flag or a ``--config`` key is fixed for every trial and leaves the
space; a ``--space`` file (:func:`read_space`) changes ranges, fixes values or drops
settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from disenkg.config.options import Option, check_value
from disenkg.config.search import Dimension
from disenkg.config.toml import load_toml
from disenkg.errors import ConfigError
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.training.config import TrainingConfig

__all__ = ["default_space", "read_space", "resolve_space", "space_to_toml", "tunable_options"]


def tunable_options(config: LinkConfig) -> dict[str, Option]:
    """The settings a search may move for ``config``'s model: the training section's and
    those of the model's section that apply to this configuration (``{name: option}``)."""
    model = config.model
    applies = set(model.applicable(model.values()))
    out = {o.name: o for o in TrainingConfig.options()
           if o.name not in ("seed", "epochs", "time_budget", "search", "patience", "min_epochs",
                             "eval_every", "eval_batch_size", "rank_type", "entity_shards",
                             "partition")
           and not o.name.endswith(("_impl", "_precision"))}
    out.update({o.name: o for o in model.options()
                if o.name in applies and not o.name.endswith(("_impl", "_precision", "_chunk"))})
    return out


def default_space(config: LinkConfig, fixed: Iterable[str] = ()) -> dict[str, Dimension]:
    """``{setting: range}`` of the settings with a declared range that apply to
    ``config``'s model, less the ``fixed`` ones."""
    fixed = set(fixed)
    return {name: opt.search for name, opt in tunable_options(config).items()
            if opt.search is not None and name not in fixed}


def read_space(path: str | Path, space: Mapping[str, Dimension], config: LinkConfig
               ) -> tuple[dict[str, Dimension], dict[str, Any]]:
    """``space`` changed by the ``--space`` file ``path``; returns the new space and the
    values the file fixes.

    The file's keys are setting names: a table ``{low, high[, log][, step]}`` or
    ``{choices = [...]}`` sets the range, ``false`` leaves the setting out of the search,
    any other value fixes it for every trial.

    Raises:
        ConfigError: naming the file and key: not a setting of this model, a range the
            setting's rule refuses (a bound or a choice), a malformed table.
    """
    table = tunable_options(config)
    out = dict(space)
    fixed: dict[str, Any] = {}
    for raw_key, value in load_toml(path, flag="--space").items():
        key = raw_key.replace("-", "_")
        where = f"{path}: {raw_key}"
        if key not in table:
            close = difflib.get_close_matches(key, list(table), n=1)
            raise ConfigError(f"{where}: not a setting a search can move for --model "
                              f"{config.model_name}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""),
                              hint="searchable: " + ", ".join(sorted(table)))
        opt = table[key]
        if value is False and not opt.is_bool:
            out.pop(key, None)
        elif isinstance(value, dict):
            dim = Dimension.from_toml(value, where)
            for v in dim.values():
                check_value(opt, v, where)
            out[key] = dim
        else:
            fixed[key] = check_value(opt, value, where)
            out.pop(key, None)
    return out, fixed


def space_to_toml(space: Mapping[str, Dimension]) -> str:
    """The space in the ``--space`` file's form."""
    return "\n".join(f"{name} = {dim.to_toml()}" for name, dim in space.items()) + "\n"


def resolve_space(layers: list[Layer], space_file: str | Path | None = None
                  ) -> tuple[LinkConfig, dict[str, Dimension], list[Layer]]:
    """The search a command line describes: the base configuration (``layers`` and the
    preset), the space (the default, less the settings the layers give, changed by
    ``space_file``), and the layers with the values the file fixes added."""
    base = LinkConfig.resolve(layers)
    explicit = {k for layer in layers for k in layer.values} - {"model"}
    space = default_space(base, explicit)
    if space_file:
        space, fixed = read_space(space_file, space, base)
        if fixed:
            layers = [*layers, Layer("config", fixed, str(space_file))]
            base = LinkConfig.resolve(layers)
    return base, space, list(layers)
