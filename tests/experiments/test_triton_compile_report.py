"""The Triton kernels compiled for sm_90 (H100 / H200) on this CPU machine: no spilled
tiles at the launch configurations the package uses (at most a few scalars), no float
atomics in the
deterministic kernels, tensor cores in bf16 and none in exact float32
(``experiments/triton_compile_report.py``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

triton = pytest.importorskip("triton")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
pytestmark = pytest.mark.skipif(not (BIN / "cuobjdump").exists(),
                                reason="triton's wheel has no NVIDIA tool binaries here")


def test_sm90_compile_quick_check():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(REPO / "experiments" / "triton_compile_report.py"),
                          "--quick", "--check"], capture_output=True, text=True, cwd=REPO,
                         env=env)
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.returncode == 0, (res.stderr[-2000:],
                                 [r for r in recs if r["violations"]])
    # every kernel the package defines is compiled (a new one must join the report)
    defined = {m for path in (REPO / "disenkg").rglob("*.py")
               for m in re.findall(r"@triton\.jit\s*\ndef (\w+_kernel)\(", path.read_text())}
    assert {r["kernel"] for r in recs} == defined and len(defined) >= 6
    for r in recs:
        assert r["arch"] == "sm_90" and 0 < r["registers"] <= 255
        assert r["stack_bytes"] <= 32, r  # a few scalars at most, no spilled tiles
        if r["op"] == "mixture_bce":
            assert (r["mma"] > 0) == (r["precision"] == "bf16"), r
            assert r["mufu"] > 0
    # the counters see what they count: the atomic schedule adds with float atomics,
    # the owner kernels of the deterministic one do not
    tile = [r for r in recs if r["kernel"] == "_tile_grad_kernel"]
    assert tile and all(r["float_atomics"] > 0 for r in tile)
    owners = [r for r in recs if r["kernel"] in ("_rows_grad_kernel", "_cols_grad_kernel")]
    assert owners and all(r["float_atomics"] == 0 for r in owners)


def test_rules_flag_what_they_name():
    from triton_compile_report import violations

    ok = {"kernel": "_rows_grad_kernel", "op": "mixture_bce", "precision": "bf16",
          "variant": "dense_weighted_no_bias",
          "local_stores": 0, "stack_bytes": 0, "local_bytes": 0, "mma": 3,
          "float_atomics": 0}
    assert violations(ok) == []
    assert violations({**ok, "local_stores": 4, "stack_bytes": 16}) == []  # 4 scalars
    assert "spills" in violations({**ok, "local_stores": 40, "stack_bytes": 112})[0]
    assert "float atomics" in violations({**ok, "float_atomics": 2})[0]
    assert violations({**ok, "kernel": "_tile_grad_kernel", "float_atomics": 2}) == []
    assert "tensor-core" in violations({**ok, "mma": 0})[0]
    assert "exact" in violations({**ok, "precision": "fp32"})[0]
