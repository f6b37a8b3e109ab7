"""The Python entry points: train a link-prediction run in one call, load a trained one.

>>> import disenkg                                                          # doctest: +SKIP
>>> run = disenkg.train("experiments/configs/umls_small.toml", epochs=5)   # doctest: +SKIP
>>> run = disenkg.load_run("runs/umls-disenkgat")                          # doctest: +SKIP
>>> run.predict_tails("acquired_abnormality", "location_of", k=3)          # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from disenkg.runs.trained import TrainedRun, load_run

__all__ = ["load_run", "train"]


def train(config: str | os.PathLike | dict[str, Any] | None = None, **overrides: Any
          ) -> TrainedRun:
    """Trains exactly as ``python -m disenkg.run link`` does and returns the loaded run.

    Args:
        config: a TOML file (``--config``) or a dict of its keys, or ``None``.
        **overrides: flag values by key (``epochs=5``, ``output_dir="runs/x"``,
            ``overwrite=True``); they win over ``config``. ``True`` sets a switch; ``False``
            leaves it unset.

    Every value goes through the same validation as the command line's flags.
    """
    from disenkg.cli.link import resolve_args, train_from_args

    argv: list[str] = []
    if isinstance(config, dict):
        overrides = {**config, **overrides}
    elif config is not None:
        argv += ["--config", os.fspath(config)]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            continue
        argv += [flag, str(value)]
    args, run_dir = resolve_args(argv)
    train_from_args(args, run_dir)
    return load_run(run_dir.path, device=args.device if args.device != "auto" else "cpu")
