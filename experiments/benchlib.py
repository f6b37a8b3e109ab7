"""Shared pieces of the benchmark scripts (imported after their huge-page switch)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def dataset_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the scripts' ``--dataset`` / ``--data-dir`` flags."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237", help="dataset name or path")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset")
    return p


def status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` and the core count, for a result's record."""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return "unknown"


def emit(res: dict, out: str | None) -> dict:
    """Prints ``res`` as one JSON line and, with ``out``, writes it there indented."""
    print(json.dumps(res))
    if out:
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
    return res
