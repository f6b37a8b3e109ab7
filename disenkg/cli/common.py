"""Shared CLI plumbing: parsers with one-line errors, logging, device, metrics table."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from disenkg.utils.device import pick_device

__all__ = ["LOG_LEVELS", "add_common_arguments", "format_table", "logging_context",
           "make_parser", "pick_device", "setup_logging"]


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
