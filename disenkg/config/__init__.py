"""Typed configuration: value rules, option declarations, the run and data sections, TOML.

The configuration of a link-prediction run is a tree of frozen dataclasses
(:class:`disenkg.pipeline.LinkConfig`): ``run`` and ``data``
(:mod:`disenkg.config.sections`), ``training``
(:class:`disenkg.training.config.TrainingConfig`) and ``model`` (one class per model,
registered with its builder in :mod:`disenkg.models.registry`). Every front end (flags,
TOML keys, :func:`disenkg.train`'s arguments) is generated from the same declarations.
"""

from disenkg.config.options import Option, Section, option
from disenkg.config.sections import DataConfig, RunConfig
from disenkg.config.toml import read_toml

__all__ = ["DataConfig", "Option", "RunConfig", "Section", "option", "read_toml"]
