"""One trial of a search: a configuration trained on the training split and judged on the
validation split, never on the test split.

Both searches run their candidates through :func:`train_trial`: ``python -m disenkg.run
tune`` (:mod:`disenkg.hpo`, Optuna's trials) and the plain command's built-in search
(:mod:`disenkg.pipeline.search`). A trial is an ordinary run directory (``config.json``,
``history.csv``, checkpoints, ``metrics.json`` without a ``test`` entry), so it can be
resumed, inspected and loaded like any run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from disenkg.datasets import KGDataset
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.pipeline.run import prepare_run, train_link

__all__ = ["IMAGE_KEYS", "follow_dim", "train_trial"]

#: the settings that tile a conv scorer's image and must fit it (derived from the vector
#: size when left unset)
IMAGE_KEYS = ("k_h", "k_w", "kernel_size")


def follow_dim(values: Mapping[str, Any], base: LinkConfig, fixed: Iterable[str]
               ) -> dict[str, Any]:
    """``values`` (settings a trial changes) plus ``None`` for the image settings that must
    be derived again because the trial's vector size no longer fits the base's image.

    Args:
        values: the trial's settings by name.
        base: the configuration the trial changes (before the KG's size is applied).
        fixed: settings the person gave (never reset).
    """
    out = dict(values)
    dim = values.get(base.model.DIM_FIELD)
    model = base.model.values()
    kh, kw = model.get("k_h"), model.get("k_w")
    if dim is not None and (kh is None or kw is None or kh * kw != dim):
        fixed = set(fixed)
        out.update({k: None for k in IMAGE_KEYS
                    if k in model and k not in fixed and k not in values})
    return out


def train_trial(layers: list[Layer], *, dataset: KGDataset,
                callbacks: Iterable[Callable[[dict[str, Any]], None]] = ()) -> dict[str, Any]:
    """Trains the configuration of ``layers`` (its ``output_dir`` is the trial's run
    directory; ``resume`` continues a trial to more epochs) on ``dataset`` without testing
    it; returns its metrics (``metrics["valid"]["mrr"]`` is the best validation MRR).

    ``callbacks`` receive each epoch's history row (a search reports validation MRR to its
    pruner there; raising stops the trial).
    """
    config, run_dir = prepare_run(layers)
    return train_link(config, run_dir, dataset=dataset, callbacks=list(callbacks), test=False)
