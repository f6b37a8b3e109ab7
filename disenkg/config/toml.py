"""TOML configuration files: flat ``key = value`` pairs, ``[sections]`` only group keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from disenkg.errors import ConfigError

__all__ = ["load_toml", "read_toml"]


def load_toml(path: str | Path, *, flag: str = "--config") -> dict[str, Any]:
    """The TOML document in ``path`` as parsed.

    Raises:
        ConfigError: the file (given by ``flag``) is missing, unreadable or not TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file {path}")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a TOML text file ({err.reason} at byte "
                          f"{err.start})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    return data


def read_toml(path: str | Path) -> dict[str, Any]:
    """The keys of a TOML config as ``{name: value}`` (``-`` in a key read as ``_``).

    Raises:
        ConfigError: the file is missing, unreadable or not TOML, a section is nested, or
            a key is set twice (also across sections); names the file and the key.
    """
    data = load_toml(path)
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
    return flat
