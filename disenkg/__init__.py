"""disenkg: disentangled graph attention for knowledge graphs and node-level tasks.

``disenkg.train(...)`` trains a link-prediction run, ``disenkg.load_run(DIR)`` loads one and
``disenkg.tune(...)`` searches hyper-parameters (:mod:`disenkg.api`); they import torch on
first use, so ``import disenkg`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_run", "train", "train_node", "tune"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load_run", "train_node", "tune"):
        from disenkg import api

        return getattr(api, name)
    raise AttributeError(f"module 'disenkg' has no attribute {name!r}")
