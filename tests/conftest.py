"""Shared fixtures: paths to the real datasets beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Triton kernels are tested on CPU tensors through the interpreter where there is no GPU.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

# the package's cache (disenkg.utils.cache: the probe's result, the native kernels, downloads)
# in one place per test session, not ~/.cache
if "DISENKG_CACHE" not in os.environ:
    import tempfile

    os.environ["DISENKG_CACHE"] = tempfile.mkdtemp(prefix="disenkg-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def kg_archive(name: str) -> Path:
    """A real KG archive: ../shared/data/kg, else the bundled data/ copy."""
    for cand in (SHARED / "kg" / f"{name}.tar.gz",
                 REPO / "disenkg" / "data" / f"{name}.tar.gz"):
        if cand.exists():
            return cand
    pytest.skip(f"dataset archive {name}.tar.gz not available")


@pytest.fixture
def umls_path() -> Path:
    return kg_archive("umls")


@pytest.fixture
def kinship_path() -> Path:
    return kg_archive("kinship")


def cheap() -> bool:
    """Slow tests run in a cheap form in CI (DISENKG_SLOW_CHEAP=1)."""
    return os.environ.get("DISENKG_SLOW_CHEAP", "0") == "1"


def cli_here(*args: str):
    """``python -m disenkg.run ARGS`` through :func:`disenkg.run.main` in this process: a
    ``subprocess.CompletedProcess`` with its exit status, standard output and error (log
    records included: the command's logging writes to the standard error it finds). A spawn
    costs seconds of imports; tests of the process itself spawn one."""
    import contextlib
    import io
    import subprocess

    from disenkg.run import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stop:  # argparse's exits
            code = stop.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
