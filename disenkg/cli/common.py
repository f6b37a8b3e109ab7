"""Shared CLI plumbing: TOML configs under flags, logging, device, metrics table."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["apply_config", "format_table", "pick_device", "setup_logging"]


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses ``argv``; values from ``--config FILE.toml`` become defaults that flags override.

    TOML keys are flag names with ``-`` or ``_``; an unknown key raises listing valid ones.
    """
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            parser.error(f"--config: no such file {path}")
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            parser.error(f"--config {path}: invalid TOML: {err}")
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):  # optional [sections] are just grouping
                flat.update(value)
            else:
                flat[key] = value
        valid = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
        norm = {k.replace("-", "_"): v for k, v in flat.items()}
        unknown = sorted(set(norm) - valid)
        if unknown:
            parser.error(f"--config {path}: unknown key(s) {unknown}; valid keys: "
                         f"{sorted(valid)}")
        parser.set_defaults(**norm)
        args = parser.parse_args(argv)
    return args


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {spec}: CUDA is not available on this machine")
    return dev


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
