"""Preset configurations of the named benchmark KGs, shipped inside the package.

``python -m disenkg.run --dataset umls`` applies ``umls.toml`` for DisenKGAT: its keys sit
under ``--config`` keys and flags (which override them) and above the size-derived
defaults of :mod:`disenkg.defaults`. ``--preset none`` turns presets off; ``--preset NAME``
picks one explicitly.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["PRESET_DIR", "PRESET_SIZES", "find_preset", "nearest_preset", "preset_names"]

PRESET_DIR = Path(__file__).resolve().parent
#: the model the presets configure
PRESET_MODEL = "disenkgat"
#: ``(entities, training triples)`` of the KG each preset was tuned on
PRESET_SIZES = {"FB15k-237": (14541, 272115), "WN18RR": (40943, 86835),
                "kinship": (104, 8544), "umls": (135, 5216)}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def find_preset(name: str) -> Path | None:
    """The preset file of a dataset name (case-insensitive), or ``None``."""
    for p in PRESET_DIR.glob("*.toml"):
        if p.stem.lower() == str(name).lower():
            return p
    return None


def nearest_preset(num_entities: int, num_train: int) -> str:
    r"""The preset whose KG is closest in size: the smallest
    :math:`|\log(N / N_p)| + |\log(T / T_p)|` over entities :math:`N` and training triples
    :math:`T` (:data:`PRESET_SIZES`)."""
    def distance(name: str) -> float:
        n, t = PRESET_SIZES[name]
        return (abs(math.log(max(1, num_entities) / n))
                + abs(math.log(max(1, num_train) / t)))

    return min(sorted(PRESET_SIZES), key=distance)
