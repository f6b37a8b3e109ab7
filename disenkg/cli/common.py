"""Shared CLI plumbing: TOML configs under flags, logging, device, metrics table."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from disenkg.config.rules import RuleError, as_bool
from disenkg.errors import ConfigError
from disenkg.utils.device import pick_device

__all__ = ["LOG_LEVELS", "add_common_arguments", "apply_config", "explicit_flags",
           "format_table", "logging_context", "make_parser", "parse_with_config",
           "pick_device", "read_config", "setup_logging"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (plus a hint), not the whole usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"hint: '{self.prog} --help' lists every flag\n")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the package's conventions: no abbreviated flags, defaults in
    ``--help``, one-line errors."""
    return Parser(prog=prog, description=description, allow_abbrev=False,
                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_common_arguments(group: argparse._ArgumentGroup) -> None:
    """``--log-level``, ``--debug`` and ``--no-progress``, the same in every command."""
    group.add_argument("--no-progress", action="store_true", help="hide tqdm progress bars")
    group.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                       help="logging level (DEBUG also shows tracebacks of user errors)")
    group.add_argument("--debug", action="store_true",
                       help="show the full traceback of errors in your input")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the flags given on the command line (not their defaults)."""
    saved = [(a, a.default) for a in parser._actions]
    for a in parser._actions:
        a.default = argparse.SUPPRESS
    try:
        ns = parser.parse_args(argv)
    finally:
        for a, d in saved:
            a.default = d
    return set(vars(ns))


def read_config(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """Reads a TOML config into ``{dest: value}``, checked by the flags' own rules.

    Keys are flag names with ``-`` or ``_``; ``[sections]`` only group keys. An unknown key,
    a key set twice (also across sections) and a value of the wrong type, range or choice
    raise :class:`~disenkg.errors.ConfigError` naming the file and key.
    """
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        section = f"[{key}]" if isinstance(value, dict) else "top level"
        for k, v in items:
            if isinstance(v, dict):
                raise ConfigError(f"{path}: [{key}.{k}]: sections cannot be nested")
            dest = k.replace("-", "_")
            if dest in flat:
                raise ConfigError(f"{path}: key {k!r} is set twice ({where[dest]} and "
                                  f"{section})")
            flat[dest], where[dest] = v, section
    unknown = sorted(set(flat) - set(actions))
    if unknown:
        close = {u: difflib.get_close_matches(u, list(actions), n=1) for u in unknown}
        near = ", ".join(f"{u} -> {c[0]}" for u, c in close.items() if c)
        raise ConfigError(f"{path}: unknown key(s) {unknown}"
                          + (f" (did you mean: {near})" if near else ""),
                          hint=f"valid keys: {', '.join(sorted(actions))}")
    return {dest: _check_value(actions[dest], v, f"{path}: key {dest!r}")
            for dest, v in flat.items()}


def _check_value(action: argparse.Action, value: Any, where: str) -> Any:
    try:
        if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
            value = as_bool(value)
        elif action.type is not None and action.type is not str:
            value = action.type(value)
        elif not isinstance(value, str):
            raise argparse.ArgumentTypeError(f"expected a string, got {value!r}")
    except (argparse.ArgumentTypeError, RuleError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(action.choices)}")
    return value


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]
                      ) -> tuple[argparse.Namespace, set[str]]:
    """Parses ``argv``; values from ``--config FILE.toml`` become defaults that flags
    override. Returns the arguments and the keys set explicitly (by a flag or the file)."""
    args = parser.parse_args(argv)
    explicit = explicit_flags(parser, argv)
    if getattr(args, "config", None):
        values = read_config(parser, Path(args.config))
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
        explicit |= set(values)
    return args, explicit


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """:func:`parse_with_config` without the explicit keys."""
    return parse_with_config(parser, argv)[0]


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


@contextlib.contextmanager
def logging_context(level: str = "INFO") -> Iterator[None]:
    """Sets up logging and writes log lines above tqdm bars, never through them."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    setup_logging(level)
    with logging_redirect_tqdm():
        yield


def format_table(metrics: dict[str, Any], splits: tuple[str, ...] = ("valid", "test")) -> str:
    """A plain-text table of MRR, MR and Hits@k per split and direction."""
    cols = ["mrr", "mr", "hits@1", "hits@3", "hits@10"]
    lines = [f"{'split':<8}{'direction':<10}" + "".join(f"{c:>10}" for c in cols)]
    for split in splits:
        m = metrics[split]
        for direction, block in (("both", m), ("head", m["head"]), ("tail", m["tail"])):
            vals = "".join(
                f"{block[c]:>10.2f}" if c == "mr" else f"{block[c]:>10.4f}" for c in cols
            )
            lines.append(f"{split:<8}{direction:<10}{vals}")
    return "\n".join(lines)
