"""The Python entry points: train a link-prediction run in one call, load a trained one.

>>> import disenkg                                                          # doctest: +SKIP
>>> run = disenkg.train("experiments/configs/umls_small.toml", epochs=5)   # doctest: +SKIP
>>> run = disenkg.load_run("runs/umls-disenkgat")                          # doctest: +SKIP
>>> run.predict_tails("acquired_abnormality", "location_of", k=3)          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from disenkg.runs.trained import TrainedRun, load_run

__all__ = ["load_run", "resolve_config", "train", "train_node", "tune"]

ConfigLike = Any  # LinkConfig | Mapping[str, Any] | str | os.PathLike | None


def _layers(config: ConfigLike, overrides: Mapping[str, Any]) -> list:
    from disenkg.config.toml import read_toml
    from disenkg.errors import ConfigError
    from disenkg.pipeline.config import Layer, LinkConfig

    layers: list[Layer] = []
    if isinstance(config, LinkConfig):
        layers.append(Layer("api", config.flat(), "disenkg.train"))
    elif isinstance(config, Mapping):
        layers.append(Layer("config", dict(config), "disenkg.train(config=dict)"))
    elif isinstance(config, (str, os.PathLike)):
        layers.append(Layer("config", read_toml(os.fspath(config)), os.fspath(config)))
    elif config is not None:
        raise ConfigError(f"config: expected a LinkConfig, a dict or a TOML path, got "
                          f"{type(config).__name__}")
    if overrides:
        layers.append(Layer("api", dict(overrides), "disenkg.train"))
    return layers


def resolve_config(config: ConfigLike = None, **overrides: Any) -> Any:
    """The :class:`~disenkg.pipeline.LinkConfig` that :func:`train` would use, before the
    KG's size fills the derived settings (see :meth:`LinkConfig.derive`)."""
    from disenkg.pipeline.config import LinkConfig

    return LinkConfig.resolve(_layers(config, overrides))


def train(config: ConfigLike = None, **overrides: Any) -> TrainedRun:
    """Trains exactly as ``python -m disenkg.run link`` does and returns the loaded run.

    Args:
        config: a :class:`~disenkg.pipeline.LinkConfig`, a dict of settings (like a TOML
            file's keys), a path to a TOML file, or ``None``.
        **overrides: settings by name (``epochs=5``, ``output_dir="runs/x"``,
            ``mi_recompute=False``, ``lr=None`` to derive it); they win over ``config``.

    Where the plain command would search (``search = "auto"``, a small KG, no preset, no
    ``epochs``: :mod:`disenkg.pipeline.search`), so does this; a
    :class:`~disenkg.pipeline.LinkConfig` counts as every one of its settings given (nothing
    left for a search to choose), a dict or a TOML file as the keys it names.

    Every value goes through the same rules as the command line's flags; a bad value or a
    setting that does not apply to the model raises :class:`~disenkg.errors.ConfigError`
    (a ``ValueError``) naming the setting and the value.
    """
    from disenkg.pipeline.run import prepare_run
    from disenkg.pipeline.search import train_searched

    layers = _layers(config, overrides)
    run_config, run_dir = prepare_run(layers)
    train_searched(layers, run_config, run_dir)
    device = run_config.run.device
    return load_run(run_dir.path, device=device if device != "auto" else "cpu")


def tune(config: ConfigLike = None, **settings: Any) -> Any:
    """Runs (or resumes) a hyper-parameter search exactly as ``python -m disenkg.run tune``.

    Args:
        config: the trials' fixed settings, as for :func:`train`.
        **settings: the search's settings (:class:`~disenkg.hpo.TuneConfig`: ``trials``,
            ``timeout``, ``storage``, ``study_name``, ``space``, ``sampler``, ``pruner``,
            ``prune_warmup``, ``max_failures``) and link settings fixed for every trial
            (``epochs=40``, ``model="conve"``, ``output_dir=...`` for the study directory).

    Returns:
        :class:`~disenkg.hpo.TuneResult`: the study, its directory and best trial (its run
        directory loads with :func:`load_run`).
    """
    from disenkg.hpo import TuneConfig, run_study

    names = set(TuneConfig.option_names())
    search = TuneConfig.from_values({k: v for k, v in settings.items() if k in names})
    link = {k: v for k, v in settings.items() if k not in names}
    return run_study(search, _layers(config, link))


def train_node(config: Mapping[str, Any] | str | os.PathLike | None = None,
               **overrides: Any) -> dict[str, Any]:
    """Runs a node-level task exactly as ``python -m disenkg.run node`` does and returns its
    metrics (``metrics.json``).

    Args:
        config: a dict of settings (a TOML file's keys) or a path to a TOML file.
        **overrides: settings by name (``task="array"``, ``features=...``, ``seeds=3``).

    A bad value or a setting of another task raises :class:`~disenkg.errors.ConfigError`.
    """
    from disenkg.config.toml import read_toml
    from disenkg.pipeline.config import Layer
    from disenkg.pipeline.node import prepare_node
    from disenkg.pipeline.node import train_node as run_node

    layers = []
    if isinstance(config, Mapping):
        layers.append(Layer("config", dict(config), "disenkg.train_node(config=dict)"))
    elif config is not None:
        layers.append(Layer("config", read_toml(os.fspath(config)), os.fspath(config)))
    if overrides:
        layers.append(Layer("api", dict(overrides), "disenkg.train_node"))
    node_config, run_dir = prepare_node(layers)
    return run_node(node_config, run_dir)
