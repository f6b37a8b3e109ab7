"""Returning freed heap memory to the operating system (glibc's ``malloc_trim``).

Building the dataset's query indices allocates many medium-sized temporaries (sorts,
``unique``) below glibc's mmap threshold; once freed they stay in the process's heap, and
the resident size keeps them (about 300 MB for a KG of one million triples) while training
allocates its large tensors elsewhere (mmap). :func:`trim_heap` hands that memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["trim_heap"]

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
