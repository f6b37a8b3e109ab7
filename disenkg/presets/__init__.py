"""Preset configurations of the named benchmark KGs, shipped inside the package.

``python -m disenkg.run --dataset umls`` applies ``umls.toml`` for DisenKGAT: its keys sit
under ``--config`` keys and flags (which override them) and above the size-derived
defaults of :mod:`disenkg.defaults`. ``--preset none`` turns presets off; ``--preset NAME``
picks one explicitly.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRESET_DIR", "find_preset", "preset_names"]

PRESET_DIR = Path(__file__).resolve().parent
#: the model the presets configure
PRESET_MODEL = "disenkgat"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def find_preset(name: str) -> Path | None:
    """The preset file of a dataset name (case-insensitive), or ``None``."""
    for p in PRESET_DIR.glob("*.toml"):
        if p.stem.lower() == str(name).lower():
            return p
    return None
