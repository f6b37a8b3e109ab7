"""A gloo process group for test workers, and :func:`spawn_ranks`, which starts them."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: imported once by the fork server, so that each worker starts without re-importing them
PRELOAD = ["torch", "torch.distributed", "torch_geometric", "disenkg.models",
           "disenkg.training", "disenkg.utils.halo", "tests.training.gloo"]


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


def spawn_ranks(fn: Callable, args: tuple, nprocs: int) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)`` (``fn(rank, *args)`` in ``nprocs``
    processes, joined; a worker's exception fails the call), the workers forked from one
    fork server per test session that has imported :data:`PRELOAD`: a fresh interpreter
    per worker costs seconds of imports. The server is single-threaded when it forks, and
    its environment is the session's at its start (set what a worker needs in ``fn``)."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    mp.start_processes(fn, args=args, nprocs=nprocs, join=True, start_method="forkserver")
