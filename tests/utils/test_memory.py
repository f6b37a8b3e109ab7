"""trim_heap: freed medium-sized allocations go back to the system."""

from __future__ import annotations

import subprocess
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


_FRAGMENT = """
import sys, torch
from disenkg.utils.memory import return_large_buffers
def rss():
    with open('/proc/self/status') as fh:
        return next(int(x.split()[1]) / 1024 for x in fh if x.startswith('VmRSS:'))
if sys.argv[1] == 'pin':
    assert return_large_buffers()
big = torch.ones(5 * 2**20)  # a mapped 20 MB block, freed: glibc raises its threshold
del big
before = rss()
parts = [torch.ones(2 * 2**20) for _ in range(40)]  # 8 MB each
keep = parts[-1]  # pins the top of the heap
del parts
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None,
                    reason="glibc mallopt on Linux")
def test_return_large_buffers_keeps_freed_blocks_out_of_the_heap():
    """After a freed 20 MB block, glibc's default keeps forty freed 8 MB blocks in the
    heap (the resident size stays ~310 MB up); with the threshold pinned at 4 MiB they
    are unmapped when freed (one block's worth stays). Fresh interpreters: the setting is
    the process's."""
    grown = {}
    for mode in ("default", "pin"):
        out = subprocess.run([sys.executable, "-c", _FRAGMENT, mode], capture_output=True,
                             text=True, check=True)
        grown[mode] = float(out.stdout.split()[-1])
    assert grown["default"] > 200, grown
    assert grown["pin"] < 40, grown
