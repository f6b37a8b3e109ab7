"""enable_huge_pages sets PyTorch's THP switch before torch loads, and respects users."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = ("from disenkg.hugepages import enable_huge_pages; import os; "
          "print(enable_huge_pages(), os.environ['THP_MEM_ALLOC_ENABLE'])")


@pytest.mark.parametrize("preset,expected", [(None, "True 1"), ("0", "False 0"),
                                             ("1", "True 1")])
def test_enable_huge_pages(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert " ".join(out) == expected


def test_too_late_after_torch_import():
    out = subprocess.run([sys.executable, "-c", "import torch; " + SCRIPT],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
