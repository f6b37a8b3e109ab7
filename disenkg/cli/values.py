"""The configuration's value rules as ``argparse`` types (:mod:`disenkg.config.rules` holds
the rules; this module only turns their errors into ``argparse``'s)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from disenkg.config import rules
from disenkg.config.rules import Rule, RuleError

__all__ = ["argtype", "integer"]


def argtype(rule: Rule) -> Callable[[str], Any]:
    """``rule`` as an ``argparse`` ``type=``: a broken rule is an ``ArgumentTypeError``."""

    def parse(given: str) -> Any:
        try:
            return rule(given)
        except RuleError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(rule, "__name__", "value")
    return parse


def integer(minimum: int | None = None) -> Callable[[str], int]:
    """An integer ``>= minimum`` (argparse type)."""
    return argtype(rules.integer(minimum))
