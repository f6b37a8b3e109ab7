"""The configuration tree of a link-prediction run and its one defaults pipeline.

:class:`LinkConfig` holds four typed sections: ``run`` (:class:`~disenkg.config.RunConfig`),
``data`` (:class:`~disenkg.config.DataConfig`), ``training``
(:class:`~disenkg.training.config.TrainingConfig`) and ``model`` (the chosen model's class
from :data:`~disenkg.models.registry.MODELS`). Every setting has one flat name, which is its
TOML key, its keyword argument in :func:`disenkg.train` and, with ``-`` for ``_``, its flag.

Each value comes from exactly one layer, in this precedence (later wins):

==========  ===================================================================
``default``  the field's default (:func:`~disenkg.config.option`), or a default that
             depends on another setting (a scorer's dropouts, ``mi_lr`` = ``lr``)
``derived``  a size rule of :mod:`disenkg.defaults`, for fields left ``None``
``preset``   the named dataset's preset (:mod:`disenkg.presets`, DisenKGAT only)
``config``   a TOML file (``--config``) or a dict given to :func:`disenkg.train`
``flag``     a command-line flag / ``api``: a keyword argument of :func:`disenkg.train`
==========  ===================================================================

(``saved``: a resumed run's own ``config.json``; ``search``: a setting the plain command's
built-in search chose, :mod:`disenkg.pipeline.search`; ``tune``: a setting a search's trial
drew, :mod:`disenkg.hpo`.) ``config.json`` records the resolved value
of every setting that applies to the model and, under ``sources``, the layer it came from;
``python -m disenkg.run link --print-config`` shows both without training.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disenkg.config.options import Option, Section, check_value, iter_options
from disenkg.config.sections import DataConfig, RunConfig
from disenkg.config.toml import read_toml
from disenkg.defaults import KGStats, derive_defaults
from disenkg.errors import ConfigError
from disenkg.models.configs import DisenKGATConfig, ModelConfig
from disenkg.models.registry import MODELS
from disenkg.presets import PRESET_MODEL, find_preset, preset_names
from disenkg.training.config import TrainingConfig

__all__ = ["DEFAULT_MODEL", "SOURCES", "LinkConfig", "Layer", "all_options"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "disenkgat"
#: the layers a value can come from, lowest precedence first
SOURCES = ("default", "derived", "preset", "config", "search", "tune", "flag", "api", "saved")
#: sources a person set on purpose: a setting that does not apply is an error there
_EXPLICIT = ("flag", "api")
#: the fields the size rules of :mod:`disenkg.defaults` fill
DERIVED_TRAINING = ("batch_size", "lr", "epochs", "patience", "min_epochs")


@dataclass(frozen=True)
class Layer:
    """Values from one source (see :data:`SOURCES`); ``where`` names it in messages (a
    file name, ``"disenkg.train"``)."""

    source: str
    values: Mapping[str, Any]
    where: str = ""


def _sections() -> list[type[Section]]:
    return [RunConfig, DataConfig, TrainingConfig] + [MODELS.get(n).config
                                                       for n in MODELS.names()]


def all_options() -> list[Option]:
    """Every setting of a link-prediction run once, in ``--help`` order (``model`` is
    separate: it chooses the model section)."""
    return [opt for _, opt in iter_options(_sections())]


def _option_table() -> dict[str, Option]:
    return {o.name: o for o in all_options()}


def unknown_keys_error(keys: Iterable[str], where: str, table: Mapping[str, Option]) -> ConfigError:
    keys = sorted(keys)
    valid = sorted([*table, "model"])
    close = {u: difflib.get_close_matches(u, valid, n=1) for u in keys}
    near = ", ".join(f"{u} -> {c[0]}" for u, c in close.items() if c)
    return ConfigError(f"{where}: unknown key(s) {keys}"
                       + (f" (did you mean: {near})" if near else ""),
                       hint=f"valid keys: {', '.join(valid)}")


def where_of(layer: Layer, key: str) -> str:
    if layer.source == "config" and layer.where:
        return f"{layer.where}: key {key!r}"
    if layer.source == "flag":
        return "--" + key.replace("_", "-")
    return key


def _check_layer(layer: Layer, table: Mapping[str, Option], *, lenient: bool) -> dict:
    """The layer's values through their rules; unknown keys raise (or, ``lenient``, are
    dropped: a saved run's bookkeeping such as ``world_size``)."""
    out: dict[str, Any] = {}
    unknown = [k for k in layer.values if k not in table and k != "model"]
    if unknown and not lenient:
        raise unknown_keys_error(unknown, layer.where or "disenkg.train", table)
    for key, value in layer.values.items():
        if key == "model":
            if not isinstance(value, str) or value not in MODELS.names():
                raise ConfigError(f"{where_of(layer, key)}: {value!r} is not one of "
                                  f"{MODELS.names()}")
            out[key] = value
        elif key in table:  # None is checked by the model's own section (nullable there?)
            out[key] = value if value is None else check_value(table[key], value,
                                                                 where_of(layer, key))
    return out


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """A link-prediction run's whole configuration (see the module docstring).

    Args:
        run (RunConfig): where the run goes and how it is shown.
        data (DataConfig): the KG.
        training (TrainingConfig): optimisation, early stopping, evaluation, the loss.
        model (ModelConfig): the model's section; its class names the model.
        sources (dict): ``{setting: layer}`` (:data:`SOURCES`) of every setting.

    Build one with :meth:`resolve` (all layers, presets) or directly; :meth:`derive` fills
    the size-derived settings from the KG.
    """

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    model: ModelConfig = field(default_factory=DisenKGATConfig)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ views
    @property
    def model_name(self) -> str:
        return self.model.name

    def flat(self) -> dict[str, Any]:
        """Every setting that applies, by its flat name (what ``config.json`` records)."""
        out: dict[str, Any] = {}
        out.update(self.run.values())
        out.update(self.data.values())
        out.update(self.training.values())
        out["model"] = self.model_name
        out.update(self.model.recorded())
        return out

    def to_toml(self, *, sources: bool = True) -> str:
        """The resolved settings as a TOML file that ``--config`` accepts (``None``
        values, which TOML cannot hold, as comments), each with its source."""
        lines = []
        groups = [("run", self.run.values()), ("data", self.data.values()),
                  ("training", self.training.values()),
                  (self.model_name, {"model": self.model_name, **self.model.recorded()})]
        for title, values in groups:
            lines.append(f"[{title}]")
            for key, value in values.items():
                src = f"  # {self.sources.get(key, 'default')}" if sources else ""
                if key == "preset" and value is None:
                    lines.append(f'{key} = "none"{src}')
                elif value is None:
                    lines.append(f"# {key} = (unset){src}")
                else:
                    lines.append(f"{key} = {_toml_value(value)}{src}")
            lines.append("")
        return "\n".join(lines)

    # ------------------------------------------------------------------ building
    @classmethod
    def resolve(cls, layers: Iterable[Layer], *, preset: bool = True) -> LinkConfig:
        """The configuration from ``layers`` (lowest precedence first) over the defaults.

        Applies the dataset's preset (``preset=True`` and ``run.preset`` not ``"none"``)
        below the layers; checks every value by its field's rule; refuses a setting given
        by a flag or an argument that does not apply to the model (a config file's or
        preset's is dropped with a warning); fills the defaults that depend on other
        settings. Size-derived settings stay ``None`` until :meth:`derive`.

        Raises:
            ConfigError: naming the setting, its value and where it came from.
        """
        table = _option_table()
        merged: dict[str, Any] = {}
        sources: dict[str, str] = {}
        where: dict[str, str] = {}
        for layer in layers:
            for key, value in _check_layer(layer, table,
                                           lenient=layer.source == "saved").items():
                merged[key], sources[key] = value, layer.source
                where[key] = layer.where or layer.source
        name = merged.get("model", DEFAULT_MODEL)
        spec = MODELS.get(name)
        if preset:
            _apply_preset(merged, sources, where, name, table)
        elif merged.get("preset") == "none":
            merged["preset"] = None
        _drop_inapplicable(merged, sources, where, spec.config, name)
        defaults = spec.config.variant_defaults(merged)
        for key, value in defaults.items():
            if merged.get(key) is None:
                merged[key], sources[key] = value, "default"
        run = RunConfig.from_values(merged)
        training = TrainingConfig.from_values(merged, progress=not run.no_progress)
        config = cls(run=run, data=DataConfig.from_values(merged), training=training,
                     model=spec.config.from_values(merged))
        return config.with_sources(sources)

    def with_sources(self, sources: Mapping[str, str]) -> LinkConfig:
        """This configuration with ``sources`` (``"default"`` for settings not named)."""
        full = {k: sources.get(k, "default") for k in self.flat()}
        return dataclasses.replace(self, sources=full)

    def derive(self, dataset: Any) -> tuple[LinkConfig, dict[str, tuple[Any, str]]]:
        """Fills the size-derived settings left ``None`` from ``dataset`` (a
        :class:`~disenkg.datasets.KGDataset`) by :func:`~disenkg.defaults.derive_defaults`.

        Returns the resolved configuration and ``{setting: (value, reason)}`` of what was
        derived (settings that do not apply to the model are left out).
        """
        m, t = self.model, self.training
        model_keys = [o.name for o in m.options() if o.derived]
        given = {k: getattr(t, k) for k in DERIVED_TRAINING}
        given.update({k: getattr(m, k) for k in model_keys})
        given["num_components"] = getattr(m, "num_components", 1)
        large = 7 if getattr(m, "scorer", None) == "conve" else 9
        derived = derive_defaults(KGStats.of(dataset), model=m.name, given=given,
                                  budget_minutes=t.time_budget, large_kernel=large)
        applies = set(m.applicable(m.values()))
        derived = {k: v for k, v in derived.items() if k in DERIVED_TRAINING or k in applies}
        training = t.replace(**{k: v for k, (v, _) in derived.items()
                                if k in DERIVED_TRAINING})
        values = {**m.values(), **{k: v for k, (v, _) in derived.items()
                                   if k not in DERIVED_TRAINING}}
        sources = dict(self.sources) | {k: "derived" for k in derived}
        later = {k: v for k, v in m.variant_defaults({**values, "lr": training.lr}).items()
                 if values.get(k) is None}
        values.update(later)
        sources.update({k: "default" for k in later})
        model = m.replace(**{k: values[k] for k in m.option_names()})
        config = dataclasses.replace(self, training=training, model=model)
        return config.with_sources(sources), derived

    def replace(self, **changes: Any) -> LinkConfig:
        """A copy with settings changed by flat name (e.g. ``lr=0.01``), each marked as
        given through the API."""
        layers = [Layer("saved", self.flat()), Layer("api", changes, "LinkConfig.replace")]
        out = LinkConfig.resolve(layers, preset=False)
        return out.with_sources({**self.sources, **{k: "api" for k in changes}})


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _apply_preset(merged: dict, sources: dict, where: dict, model: str,
                  table: Mapping[str, Option]) -> None:
    """Fills the settings no layer gave from the dataset's preset (``run.preset``)."""
    choice = merged.get("preset", "auto")
    if choice in (None, "none"):
        merged["preset"] = None
        return
    dataset = merged.get("dataset", DataConfig().dataset)
    name = Path(str(dataset)).name.split(".")[0] if choice == "auto" else choice
    path = find_preset(name)
    if path is None:
        if choice != "auto":
            raise ConfigError(f"--preset {choice!r}: no such preset; choose one of "
                              f"{preset_names()} or 'auto' / 'none'")
        merged["preset"] = None
        return
    if model != PRESET_MODEL:
        if choice != "auto":
            raise ConfigError(f"--preset {choice!r} configures {PRESET_MODEL}, not "
                              f"--model {model}")
        merged["preset"] = None
        return
    layer = Layer("preset", read_toml(path), str(path))
    layer = Layer("config", layer.values, str(path))  # checked like a config file
    for key, value in _check_layer(layer, table, lenient=False).items():
        if key not in merged:
            merged[key], sources[key], where[key] = value, "preset", str(path)
    merged["preset"] = path.stem
    logger.info("preset %s (%s); flags and --config keys override it", path.stem, path)


def _drop_inapplicable(merged: dict, sources: dict, where: dict,
                       config_cls: type[ModelConfig], model: str) -> None:
    """Refuses explicit settings that do not apply to the model; drops others."""
    section_keys = {o.name for s in (RunConfig, DataConfig, TrainingConfig)
                    for o in s.options()} | {"model"}
    own = set(config_cls.option_names())
    applies = set(config_cls.applicable({k: v for k, v in merged.items() if k in own}))
    bad = [k for k in merged if k not in section_keys and k not in applies]
    for key in bad:
        why = (f"--model {model}" if key not in own
               else f"this {model} configuration ({_condition_text(key, merged)})")
        if sources[key] in _EXPLICIT:
            flag = "--" + key.replace("_", "-") if sources[key] == "flag" else key
            raise ConfigError(f"{flag} does not apply to {why}",
                              hint="drop it, or choose the model / scorer it belongs to")
        log = logger.warning if sources[key] == "config" else logger.debug
        log("%s: %s = %r does not apply to %s; ignored", where.get(key, sources[key]), key,
            merged[key], why)
        del merged[key], sources[key]


def _condition_text(key: str, merged: Mapping[str, Any]) -> str:
    if key in ("mi_weight", "mi_lr", "mi_recompute"):
        return f"mi_estimator {merged.get('mi_estimator')!r}"
    return f"scorer {merged.get('scorer', 'interacte')!r}"
