"""Which settings a resumed run may change, and the merge of a saved config with new flags.

A resumed run takes its configuration from the run directory's ``config.json``. A key set
explicitly (by a flag or a ``--config`` file) may differ from the saved value only if it is
in :data:`SAFE_TO_CHANGE`: how long and how often to train and validate, where and how the
same computation runs, and what is shown. Everything else (model shape, optimisation,
seed, label smoothing, precision, ...) would silently make a different run, so a differing
value raises :class:`~disenkg.errors.ConfigError` naming each key with both values.
"""

from __future__ import annotations

import json
from typing import Any

from disenkg.errors import ConfigError

__all__ = ["SAFE_TO_CHANGE", "merge_for_resume"]

#: keys an explicit flag may change when resuming
SAFE_TO_CHANGE = frozenset({
    "epochs", "patience", "eval_every", "eval_batch_size",  # schedule and early stopping
    "device", "loss_impl", "encoder_impl", "head_impl",  # where / how the same function runs
    "dataset", "data_dir", "max_archive_mb",  # the data may move; its fingerprint is checked
    "output_dir", "resume", "overwrite", "config",  # the run's own bookkeeping
    "no_progress", "log_level", "debug", "tensorboard",  # what is shown
})


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def merge_for_resume(saved: dict[str, Any], current: dict[str, Any], explicit: set[str],
                     *, source: str) -> dict[str, Any]:
    """The configuration of a resumed run.

    Args:
        saved: the run's saved configuration (``config.json``'s ``args``).
        current: the configuration parsed now (flags over ``--config`` over defaults).
        explicit: the keys of ``current`` set by a flag or a config file.
        source: names the saved configuration in error messages.

    Returns:
        ``saved`` with the explicit, safe-to-change keys of ``current`` applied (and
        ``current``'s value for keys the saved config does not have).
    """
    out = dict(saved)
    differing = []
    for key, value in current.items():
        if key not in saved:
            out[key] = value
            continue
        if key in explicit and _plain(value) != _plain(saved[key]):
            if key in SAFE_TO_CHANGE:
                out[key] = value
            else:
                differing.append(f"{key}: {saved[key]!r} in the run, {value!r} now")
    if differing:
        raise ConfigError(
            f"cannot resume the run of {source} with different settings: "
            + "; ".join(differing),
            hint="drop these flags to continue the run as it was, or start a new run with "
                 "--output-dir (or --overwrite); safe to change: "
                 + ", ".join(sorted(SAFE_TO_CHANGE - {"config", "resume", "overwrite"})))
    return out
