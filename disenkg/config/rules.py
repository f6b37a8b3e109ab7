"""Value rules: one per configuration field, shared by flags, TOML files and the Python API.

A rule takes what a front end gives (the string of a flag, the native value of a TOML key
or a Python argument) and returns the typed value, or raises :class:`RuleError` saying what
was expected (``expected an integer >= 1, got 1.7``). Strings are parsed (``"3"`` is an
integer, ``"0.1"`` a number) because flags arrive as strings; ``1.7`` is not an integer and
``"no"`` is not a boolean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Rule", "RuleError", "as_bool", "decay", "fraction", "integer", "nonneg_float",
           "one_of", "pos_float", "real", "text"]

Rule = Callable[[Any], Any]


class RuleError(ValueError):
    """A value that breaks its field's rule; the message says what was expected."""


def _err(expected: str, value: Any) -> RuleError:
    return RuleError(f"expected {expected}, got {value!r}")


def integer(minimum: int | None = None) -> Rule:
    """An integer ``>= minimum``."""
    what = "an integer" + (f" >= {minimum}" if minimum is not None else "")

    def parse(given: Any) -> int:
        if isinstance(given, (bool, float)):
            raise _err(what, given)
        v = given
        if isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise _err(what, given) from None
        if not isinstance(v, int) or (minimum is not None and v < minimum):
            raise _err(what, given)
        return v

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: the largest magnitude a float32 tensor holds: larger settings overflow in the model
FLOAT32_MAX = 3.4028234663852886e38


def _float(given: Any, what: str) -> float:
    if isinstance(given, bool):
        raise _err(what, given)
    v = given
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise _err(what, given) from None
    if not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise _err(what, given)  # beyond float32 it would overflow in the model
    return float(v)


def _named(what: str, check: Callable[[float], bool]) -> Rule:
    def parse(given: Any) -> float:
        x = _float(given, what)
        if not check(x):
            raise _err(what, given)
        return x

    parse.__name__ = what
    return parse


#: any finite number
real = _named("a finite number", lambda x: True)
#: a finite number > 0
pos_float = _named("a finite number > 0", lambda x: x > 0)
#: a finite number >= 0
nonneg_float = _named("a finite number >= 0", lambda x: x >= 0)
#: a probability-like value in ``[0, 1)`` (dropout rates, label smoothing)
fraction = _named("a number in [0, 1)", lambda x: 0 <= x < 1)
#: a multiplicative decay factor in ``(0, 1]`` (1 = none)
decay = _named("a number in (0, 1]", lambda x: 0 < x <= 1)


def as_bool(v: Any) -> bool:
    """``true`` / ``false`` (a TOML or Python boolean); strings such as ``"no"`` are
    refused."""
    if not isinstance(v, bool):
        raise _err("true or false", v)
    return v


def text(v: Any) -> str:
    """A string."""
    if not isinstance(v, str):
        raise RuleError(f"expected a string, got {v!r}")
    return v


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]], *, upper: bool = False
           ) -> Rule:
    """One of ``choices`` (a list, or a function giving it, for registries that grow)."""

    def parse(given: Any) -> str:
        v = text(given)
        if upper:
            v = v.upper()
        allowed = list(choices() if callable(choices) else choices)
        if v not in allowed:
            raise RuleError(f"{given!r} is not one of {allowed}")
        return v

    parse.choices = choices  # type: ignore[attr-defined]
    return parse
