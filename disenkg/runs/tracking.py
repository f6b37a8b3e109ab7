"""Optional experiment tracking: TensorBoard scalars through ``torch.utils.tensorboard``.

TensorBoard is an optional extra (``pip install "disenkg[tracking]"``); asking for it
without the package installed raises :class:`~disenkg.errors.ConfigError` before training.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from disenkg.errors import ConfigError

__all__ = ["check_tracking", "make_callbacks"]


def check_tracking(tensorboard: bool) -> None:
    """Raises when ``tensorboard`` is asked for but not installed."""
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package, which is not "
                          "installed", hint='pip install "disenkg[tracking]" (or tensorboard)')


def make_callbacks(output_dir: Path, *, tensorboard: bool = False
                   ) -> list[Callable[[dict[str, Any]], None]]:
    """Per-epoch callbacks for :class:`~disenkg.training.LinkTrainer` (none by default)."""
    if not tensorboard:
        return []
    check_tracking(tensorboard)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def log(row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch" and value is not None:
                writer.add_scalar(key.replace("valid_", "valid/"), value, row["epoch"])
        writer.flush()

    return [log]
