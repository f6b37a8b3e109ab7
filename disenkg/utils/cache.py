"""The package's one cache directory: ``$DISENKG_CACHE``, else ``$XDG_CACHE_HOME/disenkg``,
else ``~/.cache/disenkg``. Downloaded datasets live at its top, the native kernels under
``native/``, the capability probe's result in ``probe.json``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "cache_dir"]

#: the variable that moves the cache
ENV = "DISENKG_CACHE"


def cache_dir() -> Path:
    """The cache directory (see the module doc; not created here)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "disenkg"
