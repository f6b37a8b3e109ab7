"""trim_heap: freed medium-sized allocations go back to the system."""

from __future__ import annotations

import sys

import pytest
import torch

from disenkg.utils.memory import _libc, trim_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS missing")


@pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None,
                    reason="glibc malloc_trim on Linux")
def test_trim_heap_returns_freed_heap_memory():
    """2000 tensors of 48 KiB (heap, below the mmap threshold), all freed but the last
    (which pins the top of the heap, so free() cannot shrink it): the resident size stays
    up until trim_heap releases the holes."""
    trim_heap()
    parts = [torch.ones(12 * 1024) for _ in range(2000)]  # 48 KiB each, ~94 MB
    keep = parts[-1]
    del parts
    before = _rss_mb()
    assert trim_heap()
    after = _rss_mb()
    assert before - after > 40, (before, after)
    assert keep.sum() == 12 * 1024
