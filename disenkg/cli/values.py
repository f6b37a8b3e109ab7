"""Value rules shared by flags and TOML configs: one rule set, checked before any data is read.

Each rule is an argparse ``type=`` callable that accepts the string a flag gives and the
native value a TOML file gives (``1.7`` is not an integer, ``"no"`` is not a boolean) and
raises ``argparse.ArgumentTypeError`` naming what was expected.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["as_bool", "decay", "fraction", "integer", "nonneg_float", "pos_float", "real"]


def _err(expected: str, value: Any) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")


def integer(minimum: int | None = None) -> Callable[[Any], int]:
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


def _float(given: Any, what: str) -> float:
    if isinstance(given, bool):
        raise _err(what, given)
    v = given
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise _err(what, given) from None
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(what, given)
    return float(v)


def real(v: Any) -> float:
    """Any finite number."""
    return _float(v, "a finite number")


def pos_float(v: Any) -> float:
    """A finite number > 0."""
    x = _float(v, "a finite number > 0")
    if x <= 0:
        raise _err("a finite number > 0", v)
    return x


def nonneg_float(v: Any) -> float:
    """A finite number >= 0."""
    x = _float(v, "a finite number >= 0")
    if x < 0:
        raise _err("a finite number >= 0", v)
    return x


def fraction(v: Any) -> float:
    """A probability-like value in ``[0, 1)`` (dropout rates, label smoothing)."""
    x = _float(v, "a number in [0, 1)")
    if not 0 <= x < 1:
        raise _err("a number in [0, 1)", v)
    return x


def decay(v: Any) -> float:
    """A multiplicative decay factor in ``(0, 1]`` (1 = none)."""
    x = _float(v, "a number in (0, 1]")
    if not 0 < x <= 1:
        raise _err("a number in (0, 1]", v)
    return x


def as_bool(v: Any) -> bool:
    """A TOML boolean (``true`` / ``false``); strings such as ``"no"`` are refused."""
    if not isinstance(v, bool):
        raise _err("true or false", v)
    return v


for _f, _n in ((real, "a finite number"), (pos_float, "a finite number > 0"),
               (nonneg_float, "a finite number >= 0"), (fraction, "a number in [0, 1)")):
    _f.__name__ = _n
