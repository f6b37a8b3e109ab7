"""A gloo process group for test workers spawned with ``torch.multiprocessing.spawn``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


@contextmanager
def gloo_group(rank: int, world: int, init_file: str) -> Iterator[None]:
    """Joins a ``world``-rank gloo group rendezvousing at ``init_file`` (one thread per
    process: the workers share this machine's cores), and leaves it on exit."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()
