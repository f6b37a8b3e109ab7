"""Benchmark of the fused mixture BCE: forward + backward time and peak memory per impl.

Shapes default to FB15k-237 scale (K=3, F=200, N=14541, B in {512, 2048}) with sparse
1-N targets like DisenKGAT training (a few positives per query), label smoothing 0.1 and
``order="after"``. Each (impl, B) runs in its own subprocess so that peak RSS is clean;
the op's peak memory is the rise of the peak RSS above the RSS once inputs exist
(on CUDA: ``torch.cuda.max_memory_allocated``). Ratios are against ``torch`` (the
materialising reference) measured in this same run. ``chunked:auto`` is the chunked op
with ``precision="auto"`` (bfloat16-input GEMMs on CPUs with AMX / AVX512-BF16).

    python experiments/bench_mixture_bce.py [--batch 512 2048] [--order after] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from benchlib import status_mb


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def worker(spec: str, B: int, K: int, F: int, N: int, order: str, repeat: int,
           device: str) -> dict:
    """One ``impl[:precision]`` (e.g. ``chunked:auto``) at batch size ``B``."""
    import torch

    from disenkg.ops import mixture_bce

    impl, _, precision = spec.partition(":")
    torch.manual_seed(0)
    dev = torch.device(device)
    q = torch.randn(B, K, F, device=dev).mul_(0.1).requires_grad_()
    e = torch.randn(N, K, F, device=dev).mul_(0.1).requires_grad_()
    att = torch.randn(B, K, device=dev).requires_grad_()
    bias = torch.zeros(N, device=dev).requires_grad_()
    per_row = 4
    rows = torch.arange(B, device=dev).repeat_interleave(per_row)
    cols = torch.randint(0, N, (B * per_row,), device=dev)

    def step():
        loss = mixture_bce(q, e, att, (rows, cols), bias=bias, label_smoothing=0.1,
                           order=order, impl=impl, precision=precision or "fp32")
        loss.backward()
        for x in (q, e, att, bias):
            x.grad = None
        return float(loss)

    # Memory: the first call, from a fresh process (freed memory a later call could reuse
    # is not yet held by the allocator, so the peak RSS rise is the op's own).
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        _reset_peak()
        base = status_mb("VmRSS")
    step()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else status_mb("VmHWM")) - base
    # Time: median of later calls (the first one was the warm-up).
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        loss = step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"impl": spec, "B": B, "seconds": statistics.median(times), "peak_mb": peak,
            "loss": loss, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[512, 2048], help="batch sizes B")
    p.add_argument("--components", type=int, default=3, help="K")
    p.add_argument("--features", type=int, default=200, help="F")
    p.add_argument("--entities", type=int, default=14541, help="N")
    p.add_argument("--order", default="after", choices=["after", "before"], help="mixing")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (median)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--impls", nargs="+", default=None,
                   help="impls to compare, each IMPL or IMPL:PRECISION (default: torch "
                        "chunked chunked:auto, plus triton on cuda)")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "B"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        res = worker(a.worker[0], int(a.worker[1]), a.components, a.features, a.entities,
                     a.order, a.repeat, a.device)
        print(json.dumps(res))
        return
    impls = a.impls or (["eager", "chunked", "native", "native:auto"]
                        + (["triton"] if a.device == "cuda" else []))
    print(f"mixture_bce fwd+bwd, K={a.components} F={a.features} N={a.entities} "
          f"order={a.order} device={a.device}")
    print(f"{'B':>6} {'impl':>12} {'seconds':>9} {'peak MB':>9} {'speedup':>8} "
          f"{'mem ratio':>10}")
    for B in a.batch:
        results = {}
        for impl in impls:
            cmd = [sys.executable, __file__, "--worker", impl, str(B), "--components",
                   str(a.components), "--features", str(a.features), "--entities",
                   str(a.entities), "--order", a.order, "--repeat", str(a.repeat),
                   "--device", a.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        ref = results[impls[0]]
        for impl, r in results.items():
            speed = ref["seconds"] / r["seconds"]
            mem = ref["peak_mb"] / max(r["peak_mb"], 1e-9)
            print(f"{B:>6} {impl:>12} {r['seconds']:>9.3f} {r['peak_mb']:>9.1f} "
                  f"{speed:>7.2f}x {mem:>9.1f}x")
        diff = abs(results[impls[0]]["loss"] - results[impls[-1]]["loss"])
        print(f"{'':>6} |loss({impls[0]}) - loss({impls[-1]})| = {diff:.2e}")


if __name__ == "__main__":
    main()
