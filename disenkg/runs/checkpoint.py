"""Checkpoints that load safely: tensors, numbers, strings, lists and dicts only.

Every file is written atomically and read with ``torch.load(..., weights_only=True)``, so
a checkpoint cannot carry pickled Python objects and loading one never runs code. A file
that fails that load (corrupt, truncated, or holding a pickle payload) is refused with a
:class:`~disenkg.errors.CheckpointError` naming it; there is no unsafe fallback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from disenkg.errors import CheckpointError
from disenkg.utils.io import atomic_save

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Writes ``obj`` atomically; raises ``TypeError`` if it would not load safely."""
    _check_safe(obj, "checkpoint")
    atomic_save(obj, path)


def load_checkpoint(path: str | os.PathLike, *, required: tuple[str, ...] = ()
                    ) -> dict[str, Any]:
    """Loads a checkpoint onto the CPU with ``weights_only=True``.

    Args:
        path: the file.
        required: keys the checkpoint must hold.

    Raises:
        CheckpointError: the file is missing, corrupt, truncated, not a dict, lacks a
            ``required`` key, or holds objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickling_detail(str(err))
        if "GLOBAL" in detail or "global" in detail:
            raise CheckpointError(
                f"checkpoint {path} holds objects that are not safe to load ({detail}); it "
                f"was refused without running anything",
                hint="only checkpoints written by disenkg (tensors and plain values) load"
            ) from err
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({detail})") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated "
                              f"({type(err).__name__}: {first})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; present: {sorted(obj)}")
    return obj


def _unpickling_detail(message: str) -> str:
    """The one informative line of torch's weights-only error (never its advice to load
    the file unsafely)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("Trying to load unsupported GLOBAL", "Unsupported", "Could not",
                            "Unpickler error", "UnpicklingError")) or "GLOBAL" in line:
            return line.rstrip(".")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "weights_only" not in ln and "Weights only" not in ln
              and "documentation" not in ln]
    return useful[0].rstrip(".") if useful else "not a weights-only checkpoint"


_SAFE_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _check_safe(obj: Any, where: str) -> None:
    if isinstance(obj, (torch.Tensor, *_SAFE_SCALARS)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_safe(k, f"{where} key")
            _check_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_safe(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}, which does not load with "
                    f"weights_only=True; store tensors and plain values")
