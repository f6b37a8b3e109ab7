"""Atomic writes: a temporary file in the same directory, flushed, then renamed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from disenkg.errors import RunDirError

__all__ = ["atomic_save", "atomic_write_text"]


def _atomic(path: str | os.PathLike, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise RunDirError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError of its
        # stream writer; the previous file at ``path`` is intact either way
        if isinstance(err, OSError) or (isinstance(err, RuntimeError) and any(
                w in str(err) for w in ("unexpected pos", "file write failed",
                                        "PytorchStreamWriter"))):
            free = shutil.disk_usage(path.parent).free
            reason = err.strerror if isinstance(err, OSError) and err.strerror else \
                str(err).splitlines()[0][:200]
            raise RunDirError(f"cannot write {path}: {reason} ({free / 2**20:.0f} MiB free "
                              f"on its file system); the previous {path.name} is unchanged",
                              hint="free disk space (or choose another --output-dir) and "
                                   "resume") from err
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` so that readers see either the old or the new file."""
    _atomic(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic(path, lambda fh: fh.write(text.encode("utf-8")))
