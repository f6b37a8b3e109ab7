"""Search ranges of configuration fields: where a hyper-parameter search may move a setting.

A field declares its range next to its rule (``option(..., search=Range(1e-4, 1e-2,
log=True))``), so the search space of a model is read off its configuration classes (one
place): :func:`disenkg.hpo.space.default_space`. A range is one dimension of the space:

* :class:`Range`: a number in ``[low, high]``; ``log`` samples ``log x`` uniformly (for
  learning rates and penalties spanning decades); integers when both bounds are ``int``
  (``step`` their spacing).
* :class:`Choice`: one of a few values (sizes that must tile an image, K, batch sizes).

A ``--space FILE.toml`` table overrides a field's range with the same keys (``low``,
``high``, ``log``, ``step`` or ``choices``): :func:`Dimension.from_toml`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from disenkg.errors import ConfigError

__all__ = ["Choice", "Dimension", "Range"]


class Dimension:
    """One dimension of a search space (:class:`Range` or :class:`Choice`)."""

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna ``trial`` draws for setting ``name``."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this dimension."""
        raise NotImplementedError

    def values(self) -> list[Any]:
        """The values that the rule of the setting must accept (bounds or choices)."""
        raise NotImplementedError

    def to_toml(self) -> str:
        """This dimension as an inline TOML table (the ``--space`` file's form)."""
        raise NotImplementedError

    @staticmethod
    def from_toml(value: Mapping[str, Any], where: str) -> Dimension:
        """A dimension from a ``--space`` table: ``{low, high[, log][, step]}`` or
        ``{choices = [...]}``.

        Raises:
            ConfigError: unknown keys, missing bounds, ``low > high``, a log range that is
                not positive, an empty choice list.
        """
        keys = set(value)
        if "choices" in keys:
            extra = keys - {"choices"}
            choices = value["choices"]
            if extra or not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: expected {{choices = [v1, v2, ...]}} (a non-empty "
                                  f"list and nothing else), got {dict(value)}")
            return Choice(*choices)
        extra = keys - {"low", "high", "log", "step"}
        if extra or not {"low", "high"} <= keys:
            raise ConfigError(f"{where}: expected {{low = .., high = ..[, log = true][, step = "
                              f"..]}} or {{choices = [..]}}, got {dict(value)}")
        low, high = value["low"], value["high"]
        for k, v in (("low", low), ("high", high), ("step", value.get("step", 1))):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: {k} must be a number, got {v!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: log must be true or false, got {log!r}")
        try:
            return Range(low, high, log=log, step=value.get("step"))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None


@dataclass(frozen=True, init=False)
class Range(Dimension):
    """A number in ``[low, high]``: integers when both bounds are ``int`` (every ``step``-th
    one), else floats; ``log`` draws ``log x`` uniformly (``low > 0``)."""

    low: float
    high: float
    log: bool
    step: float | None

    def __init__(self, low: float, high: float, *, log: bool = False,
                 step: float | None = None) -> None:
        if not low <= high:
            raise ValueError(f"low {low} > high {high}")
        if log and low <= 0:
            raise ValueError(f"a log range needs low > 0, got {low}")
        if log and step is not None:
            raise ValueError("a log range takes no step")
        if step is not None and step <= 0:
            raise ValueError(f"step must be > 0, got {step}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "log", log)
        object.__setattr__(self, "step", step)

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and (
            self.step is None or isinstance(self.step, int))

    def suggest(self, trial: Any, name: str) -> Any:
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step,
                                   log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.is_int and not float(value).is_integer():
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def values(self) -> list[Any]:
        return [self.low, self.high]

    def to_toml(self) -> str:
        parts = [f"low = {self.low!r}", f"high = {self.high!r}"]
        if self.log:
            parts.append("log = true")
        if self.step is not None:
            parts.append(f"step = {self.step!r}")
        return "{ " + ", ".join(parts) + " }"


@dataclass(frozen=True, init=False)
class Choice(Dimension):
    """One of ``choices`` (numbers, strings or booleans)."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        if not choices:
            raise ValueError("a choice needs at least one value")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"repeated choices in {list(choices)}")
        object.__setattr__(self, "choices", tuple(choices))

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def values(self) -> list[Any]:
        return list(self.choices)

    def to_toml(self) -> str:
        def lit(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return '"' + v + '"'
            return repr(v)

        return "{ choices = [" + ", ".join(lit(c) for c in self.choices) + "] }"
