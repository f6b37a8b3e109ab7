"""The device a run uses, from its ``device`` setting."""

from __future__ import annotations

import torch

from disenkg.errors import ConfigError

__all__ = ["pick_device"]


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"--device {spec!r}: not a device ('auto', 'cpu', 'cuda' or "
                          f"'cuda:N')") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s)")
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)  # kernels (Triton) launch on the current device
    return dev
