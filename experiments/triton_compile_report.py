"""Compiles every Triton kernel of the package for a GPU architecture ahead of time, on any
machine (no GPU needed), and reports what the compiled code is: one JSON line per kernel
variant with its launch configuration, registers per thread, spills, shared memory and
counts of SASS instructions that matter (tensor-core ``HMMA`` / ``HGMMA``, special-function
``MUFU``, float atomics).

The kernels are launched through the package's own wrappers
(:mod:`disenkg.ops.mixture_bce.triton_kernels`, :mod:`disenkg.ops.edge_triton`) with CPU
tensors, a stand-in Triton driver that names the target (``sm_90`` = H100 / H200 by
default) and launches that compile without running, so the variants and launch
configurations are exactly the ones training uses. Triton's wheel carries ``ptxas`` and
``cuobjdump``, so the cubin is real: the numbers are what the GPU would load.

    python experiments/triton_compile_report.py            # every variant, sm_90
    python experiments/triton_compile_report.py --check    # exit 1 on a violated rule
    python experiments/triton_compile_report.py --quick --arch 80
    python experiments/triton_compile_report.py --sweep    # re-derive LAUNCH (about an hour)

``--check`` rules: no kernel spills registers beyond a few scalars (at most
``SCALAR_SPILL_BYTES`` of stack, no local arrays: ptxas' choice around that is not stable
across versions; with Triton 3.9 on sm_90 the training variants spill nothing); the
deterministic kernels (the mixture loss's owner sweeps, the edge products) contain no
float atomics; the bf16 loss kernels use tensor-core instructions and the float32 ones do
not (they compute exactly, ``input_precision="ieee"``).

What this does not measure: time. Spills, instruction mix and occupancy limits are
properties of the compiled code; speed needs the GPU (``experiments/bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

if __name__ == "__main__":  # real JIT functions, not the interpreter's (set before import)
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
#: spilled bytes tolerated: a few scalars that ptxas parks around the loops (seen at 64 to
#: 128 registers, so not register pressure); a spilled tile is hundreds of bytes (the loss
#: kernels' first launch configuration spilled 88 B to 1.3 kB)
SCALAR_SPILL_BYTES = 32
#: the kernels that must contain no float atomics (deterministic by construction)
DETERMINISTIC = {"_rows_grad_kernel", "_cols_grad_kernel", "_sddmm_kernel", "_csr_kernel"}


class _CompileOnlyDriver:
    """The part of a Triton driver that compiling needs: the target, device 0, stream 0."""

    def __init__(self, arch: int) -> None:
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


class Recorder:
    """Makes every ``kernel[grid](...)`` launch compile only, and records the results."""

    def __init__(self, arch: int) -> None:
        self.compiled: list[tuple[str, dict, object]] = []
        self._arch = arch
        self._run = JITFunction.run

    def __enter__(self) -> Recorder:
        self._prev = driver._active  # None until a real driver was ever asked for
        driver.set_active(_CompileOnlyDriver(self._arch))
        run = self._run
        compiled = self.compiled

        def compile_only(fn, *args, grid, warmup, **kw):
            kernel = run(fn, *args, grid=grid, warmup=True, **kw)
            consts = {k: v for k, v in kw.items() if k.isupper() or k.startswith("num_")}
            compiled.append((fn.fn.__name__, consts, kernel))
            return kernel

        JITFunction.run = compile_only
        return self

    def __exit__(self, *exc) -> None:
        JITFunction.run = self._run
        driver._active = self._prev


def _tool(name: str, path: str, *flags: str) -> str:
    res = subprocess.run([str(BIN / name), *flags, path], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(flags)} failed: {res.stderr.strip()}")
    return res.stdout


def inspect_cubin(cubin: bytes) -> dict:
    """Registers, stack, shared memory and instruction counts of one compiled kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = _tool("cuobjdump", f.name, "--dump-resource-usage")
        sass = _tool("cuobjdump", f.name, "--dump-sass")
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage.split("Function")[-1]))
    return {
        "registers": int(fields["REG"]),
        "stack_bytes": int(fields["STACK"]),
        "local_bytes": int(fields["LOCAL"]),
        "shared_bytes": int(fields["SHARED"]),
        "local_stores": len(re.findall(r"\bSTL\b", sass)),
        "mma": len(re.findall(r"\bHG?MMA\b", sass)),
        "mufu": len(re.findall(r"\bMUFU\.", sass)),
        "float_atomics": len(re.findall(r"\b(?:RED|ATOM|ATOMG)\.[\w.]*\bF(?:32|64)\b", sass)),
    }


# ------------------------------------------------------------------------------ cases
def mixture_cases(Ks: list[int], precisions: list[bool], flags: bool = True):
    """The fused loss's launches at FB15k-237's shape: forward (loss only), the fused sweep
    (atomic) and the deterministic owner sweeps, with an entity bias, sparse targets and a
    scalar weight (training's case); with ``flags`` also the other compiled variant (no
    bias, a dense target, a per-element weight, the forward's ``(B, N)`` output)."""
    from disenkg.ops.mixture_bce import triton_kernels as tk
    from disenkg.ops.mixture_bce.inputs import Target

    B, F, N = 64, 200, 14541
    for bf16, K in itertools.product(precisions, Ks):
        q, e = torch.zeros(B, K, F), torch.zeros(N, K, F)
        loga, bias = torch.zeros(B, K), torch.zeros(N)
        sparse = Target(num_rows=B, num_cols=N, t0=0.1 / N)
        dense = Target(num_rows=B, num_cols=N, dense=torch.zeros(B, N))
        prec = "bf16" if bf16 else "fp32"
        variants = [("training", bias, sparse, 1.0)]
        if flags:
            variants.append(("dense_weighted_no_bias", None, dense, torch.zeros(B, N)))
        for variant, b, tgt, w in variants:
            case = {"op": "mixture_bce", "K": K, "precision": prec, "variant": variant}
            args = (q, e, loga, b, tgt)
            if K == Ks[0]:
                yield {**case, "call": "forward"}, partial(
                    tk.triton_forward, *args, "sum" if b is not None else "none", bf16=bf16)
            for call, det in (("grads", False), ("grads_deterministic", True)):
                yield {**case, "call": call}, partial(
                    tk.triton_grads, *args, w, with_loss=True, bf16=bf16, deterministic=det)


def edge_cases(dtypes: list[torch.dtype]):
    """The encoder's edge products: SDDMM with and without the relation table, both CSR
    SpMMs and the per-relation reduction (K = 3, F = 200)."""
    from disenkg.ops import edge_triton as et
    from disenkg.ops.edge_products import EdgeGraph

    n, r, K, F = 50, 7, 3, 200
    src = torch.arange(120) % n
    dst = (torch.arange(120) * 7 + 3) % n
    rel = torch.arange(120) % r
    g = EdgeGraph.build(torch.stack([src, dst]), rel, n, r)
    for dt in dtypes:
        x, table = torch.zeros(n, K, F, dtype=dt), torch.zeros(r, K, F, dtype=dt)
        w = torch.zeros(120, K, dtype=dt)
        case = {"op": "edge_products", "K": K, "precision": str(dt).removeprefix("torch."),
                "variant": "training"}
        yield {**case, "call": "sddmm"}, partial(et.sddmm, x, x, table, g.src, g.dst, g.rel)
        yield {**case, "call": "sddmm_no_table"}, partial(et.sddmm, x, x, None, g.src, g.dst,
                                                          g.rel)
        yield {**case, "call": "spmm"}, partial(et.spmm, x, table, w, g.dst_ptr, g.dst_order,
                                                g.src, g.rel, n)
        yield {**case, "call": "relation_sum"}, partial(
            et.relation_sum, x, x, w, g.rel_ptr, g.rel_order, g.dst, g.src, g.rel, r)


def report(cases, arch: int):
    """Yields one record per compiled kernel of each case."""
    for case, launch in cases:
        with Recorder(arch) as rec:
            launch()
        for name, consts, kernel in rec.compiled:
            yield {**case, "kernel": name, "arch": f"sm_{arch}", "launch": consts,
                   **inspect_cubin(kernel.asm["cubin"])}


def violations(rec: dict) -> list[str]:
    """The ``--check`` rules this record breaks."""
    out = []
    if rec["stack_bytes"] > SCALAR_SPILL_BYTES or rec["local_bytes"]:
        out.append(f"spills ({rec['local_stores']} local stores, {rec['stack_bytes']} B "
                   "stack)")
    if rec["kernel"] in DETERMINISTIC and rec["float_atomics"]:
        out.append(f"{rec['float_atomics']} float atomics in a deterministic kernel")
    if rec["op"] == "mixture_bce":
        if rec["precision"] == "bf16" and not rec["mma"]:
            out.append("bf16 without tensor-core instructions")
        if rec["precision"] == "fp32" and rec["mma"]:
            out.append("fp32 (exact) with tensor-core instructions")
    return out


# ------------------------------------------------------------------------------ sweep
SWEEP = {
    "BLOCK_B": [16, 32, 64], "BLOCK_N": [16, 32, 64], "BLOCK_F": [16, 32], "num_warps": [4, 8],
    "num_stages": [1],
}


def sweep(arch: int, Ks: list[int]) -> None:
    """For each mixture kernel kind, every configuration in :data:`SWEEP` compiled in both
    precisions at each ``K``: one JSON line each, with the larger register count of the
    two precisions and whether both pass ``--check`` (:func:`violations`)."""
    from disenkg.ops.mixture_bce import triton_kernels as tk

    saved = {k: list(v) for k, v in tk.LAUNCH.items()}
    calls = {"fwd": "forward", "tile": "grads", "rows": "grads_deterministic",
             "cols": "grads_deterministic"}
    kernels = {"fwd": "_fwd_kernel", "tile": "_tile_grad_kernel",
               "rows": "_rows_grad_kernel", "cols": "_cols_grad_kernel"}
    try:
        for kind, K in itertools.product(calls, Ks):
            if kind == "fwd" and K != Ks[0]:
                continue  # the forward kernel loops over k at run time
            for values in itertools.product(*SWEEP.values()):
                cfg = dict(zip(SWEEP, values))
                tk.LAUNCH[kind] = [(None, cfg)]
                recs = [r for r in report(
                    ((c, f) for c, f in mixture_cases([K], [False, True], flags=False)
                     if c["call"] == calls[kind]), arch) if r["kernel"] == kernels[kind]]
                regs = max(r["registers"] for r in recs)
                ok = not any(violations(r) for r in recs)
                print(json.dumps({"kind": kind, "K": K, **cfg, "max_registers": regs,
                                  "passes_check": ok}), flush=True)
    finally:
        tk.LAUNCH.clear()
        tk.LAUNCH.update(saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90,
                    help="compute capability times ten: 90 = H100 / H200, 80 = A100")
    ap.add_argument("--quick", action="store_true",
                    help="K = 3 only (FB15k-237's default) and float32 edge products "
                         "(default: K = 1 ... 9 and 16, float32 and float64)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a kernel breaks a rule (see the module docstring)")
    ap.add_argument("--markdown", action="store_true",
                    help="print a Markdown table instead of JSON lines")
    ap.add_argument("--sweep", action="store_true",
                    help="compile every launch configuration of SWEEP for the loss kernels")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("triton_compile_report compiles real kernels: run it as a script, "
                         "or without TRITON_INTERPRET=1")
    from disenkg.ops.mixture_bce.triton_kernels import ONCE_MAX_K

    if args.sweep:
        sweep(args.arch, [3, ONCE_MAX_K, ONCE_MAX_K + 1])
        return 0
    Ks = [3] if args.quick else list(range(1, ONCE_MAX_K + 2)) + [16]
    cases = itertools.chain(
        mixture_cases(Ks, [False, True]),
        edge_cases([torch.float32] if args.quick else [torch.float32, torch.float64]))
    bad = 0
    if args.markdown:
        print("| call | variant | K | precision | kernel | tile (B x N x F), warps | registers | "
              "spilled stores | HMMA | MUFU | float atomics | rules |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rec in report(cases, args.arch):
        broken = violations(rec)
        bad += bool(broken)
        if args.markdown:
            lc = rec["launch"]
            tile = (f"{lc['BLOCK_B']} x {lc['BLOCK_N']} x {lc['BLOCK_F']}" if "BLOCK_B" in lc
                    else f"{lc['BLOCK_E']} edges x {lc['BLOCK_F']}")
            print(f"| {rec['call']} | {rec['variant']} | {rec['K']} | {rec['precision']} | "
                  f"`{rec['kernel']}` | "
                  f"{tile}, {lc.get('num_warps', 4)} | {rec['registers']} | "
                  f"{rec['local_stores']} | {rec['mma']} | {rec['mufu']} | "
                  f"{rec['float_atomics']} | {'; '.join(broken) or 'ok'} |", flush=True)
        else:
            print(json.dumps({**rec, "violations": broken}), flush=True)
    if args.check and bad:
        print(f"{bad} kernel variant(s) break a rule", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
