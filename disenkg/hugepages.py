"""Transparent huge pages for PyTorch's large CPU tensors.

With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch aligns CPU allocations of 2 MB and more to huge
pages and asks the kernel for them (``madvise``), so a fresh 80 MB buffer costs 40 page
faults instead of 20 000. On this project's 2-core benchmark machine first-touch faults
on fresh buffers took as long as the GEMMs filling them. PyTorch reads the variable
once, at its first allocation, so :func:`enable_huge_pages` must run before ``import
torch``; the command line and the benchmark scripts call it first thing. This module
imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

__all__ = ["enable_huge_pages"]

ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> bool:
    """Sets ``THP_MEM_ALLOC_ENABLE=1`` unless the user chose a value; returns whether the
    setting is ``1`` and can still take effect (``torch`` not imported yet)."""
    os.environ.setdefault(ENV, "1")
    return os.environ[ENV] == "1" and "torch" not in sys.modules
