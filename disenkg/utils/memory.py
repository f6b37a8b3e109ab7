"""Returning freed heap memory to the operating system (glibc's ``malloc_trim``).

Building the dataset's query indices allocates many medium-sized temporaries (sorts,
``unique``) below glibc's mmap threshold; once freed they stay in the process's heap, and
the resident size keeps them (about 300 MB for a KG of one million triples) while training
allocates its large tensors elsewhere (mmap). :func:`trim_heap` hands that memory back.

glibc also raises its mmap threshold whenever a mapped block is freed (up to 32 MiB), so
a training step's medium buffers (per-edge arrays, the halo exchange's pieces) move into
the heap, where they fragment it and the process keeps their memory between steps.
:func:`return_large_buffers` pins the threshold: blocks above it are mapped and unmapped
every time (their pages are faulted in afresh, which costs time), and the heap stays
small. Entity-sharded ranks use it, where a rank's memory is the point: on the
500 000-entity synthetic KG at 4 ranks a rank's peak fell from 1 534-1 603 to 1 335-1 346
MB above the interpreter; a one-process FB15k-237 DisenKGAT step ran 5-8 % slower with it
(Intel AMX, 2 cores) for 7 % less peak memory, so one process keeps glibc's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["LARGE_BUFFER_BYTES", "return_large_buffers", "trim_heap"]

#: the mmap threshold :func:`return_large_buffers` pins
LARGE_BUFFER_BYTES = 2**20
#: glibc's mallopt parameter number of the mmap threshold
_M_MMAP_THRESHOLD = -3

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return lib


def trim_heap() -> bool:
    """Releases the free memory at the top and inside the heap to the system (glibc);
    returns whether anything was released (``False`` where the C library has no
    ``malloc_trim``)."""
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))


def return_large_buffers(threshold: int = LARGE_BUFFER_BYTES) -> bool:
    """From now on in this process, heap blocks of ``threshold`` bytes or more are mapped
    and returned to the system when freed (glibc's mmap threshold, pinned: no dynamic
    raise); returns whether it took effect (``False`` where the C library is not glibc).
    """
    lib = _libc()
    if lib is None or not hasattr(lib, "mallopt"):
        return False
    ok = bool(lib.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    if ok:
        logger.debug("mmap threshold pinned at %d bytes", threshold)
    return ok
