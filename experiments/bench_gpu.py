"""The GPU benchmark of issue 14, prepared to run in one call on a lent GPU machine.

Prints one JSON line per part and a final JSON line with everything (and the card's name):

1. ``loss``: the fused mixture BCE, forward + backward at B = 2048, K = 3, F = 200 against
   N = 14 541 entities (FB15k-237's), ``triton`` against ``eager`` (the materialising
   reference): median seconds and peak memory (``torch.cuda.max_memory_allocated``) of
   each, and their ratios; on a GPU also ``triton`` in bf16 and, in both precisions, with
   each logit tile computed twice (``*_twice``: the sweep before tiles were kept), and the
   deterministic schedule in bf16 (no float atomics; two logit passes).
2. ``default``: DisenKGAT at the authors' FB15k-237 setting (batch 2048, InteractE, K = 3,
   F = 200), the package default (every ``impl`` and precision ``auto``) against the plain
   PyTorch path (``--encoder-impl chunked --loss-impl eager --head-impl eager``, fp32):
   median step seconds, one full epoch with validation, the full filtered test
   evaluation and peak memory of each.
3. ``distmult``: the authors' DistMult-cross K = 2 setting (batch 128, 2 layers,
   club_s): seconds of one training epoch with the package default.

Targets (issue 14, one H100-class GPU): epoch <= 5 s, peak memory <= 8 GB, test
evaluation <= 3 s, the Triton loss >= 3x faster than eager with >= 10x less memory, the
default >= 5x faster per step than the plain path.

    python experiments/bench_gpu.py --data-dir ../shared/data/kg          # on a GPU
    python experiments/bench_gpu.py --device cpu --small                  # a smoke run

``--small`` shrinks every size (UMLS instead of FB15k-237, a few steps) so the script's
logic runs anywhere in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time

from benchlib import dataset_parser


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float | None:
    import torch

    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


@contextlib.contextmanager
def _tiles_kept(once: bool):
    """With ``once=False`` the Triton sweeps compute each logit tile twice (as before the
    kept-tile sweep), for the comparison."""
    if once:
        yield
        return
    from disenkg.ops.mixture_bce import triton_kernels as tk

    saved = tk.ONCE_MAX_K
    tk.ONCE_MAX_K = 0
    try:
        yield
    finally:
        tk.ONCE_MAX_K = saved


def bench_loss(device, small: bool, repeats: int) -> dict:
    """Part 1: the fused loss, triton (CUDA; chunked on a CPU) against eager."""
    import torch

    from disenkg.ops import mixture_bce

    B, K, F, N = (64, 3, 32, 500) if small else (2048, 3, 200, 14541)
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(B, K, F, generator=g).to(device).requires_grad_()
    e = torch.randn(N, K, F, generator=g).to(device).requires_grad_()
    att = torch.randn(B, K, generator=g).to(device).requires_grad_()
    rows = torch.arange(B).repeat_interleave(3).to(device)
    cols = torch.randint(0, N, (3 * B,), generator=g).to(device)
    fast = "triton" if device.type == "cuda" else "chunked"
    out = {"B": B, "K": K, "F": F, "N": N}
    # on a GPU also the Triton sweep that computes each tile twice (ONCE_MAX_K = 0), both
    # in bf16, and the deterministic schedule (owner kernels, no float atomics)
    # (name, impl, precision, logit tiles kept, deterministic)
    variants = [(fast, fast, "fp32", True, False), ("eager", "eager", "fp32", True, False)]
    if device.type == "cuda":
        variants += [("triton_twice", "triton", "fp32", False, False),
                     ("triton_bf16", "triton", "bf16", True, False),
                     ("triton_bf16_twice", "triton", "bf16", False, False),
                     ("triton_bf16_deterministic", "triton", "bf16", True, True)]
    for name, impl, precision, once, det in variants:
        times = []
        _peak_reset(device)
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(det, warn_only=True)
        with _tiles_kept(once):
            for r in range(repeats + 1):
                _sync(device)
                t0 = time.perf_counter()
                loss = mixture_bce(q, e, att, (rows, cols), label_smoothing=0.1, impl=impl,
                                   precision=precision)
                loss.backward()
                _sync(device)
                if r:
                    times.append(time.perf_counter() - t0)
                q.grad = e.grad = att.grad = None
        torch.use_deterministic_algorithms(prev, warn_only=True)
        out[name] = {"seconds": round(statistics.median(times), 5),
                     "peak_mb": _peak_mb(device), "loss": float(loss.detach())}
    out["speedup"] = round(out["eager"]["seconds"] / out[fast]["seconds"], 2)
    if device.type == "cuda":
        out["memory_ratio"] = round(out["eager"]["peak_mb"] / out[fast]["peak_mb"], 1)
    return out


def _trainer(argv: list[str], device, out_dir: str):
    from disenkg.cli.link import resolve_args
    from disenkg.datasets import KGDataset
    from disenkg.models.registry import MODELS
    from disenkg.training import LinkTrainer
    from disenkg.utils import seed_everything

    config = resolve_args([*argv, "--no-progress", "--output-dir", out_dir, "--overwrite"])[0]
    seed_everything(config.training.seed)
    ds = KGDataset.load(config.data.dataset, data_dir=config.data.data_dir)
    config = config.derive(ds)[0]
    model = MODELS.get(config.model_name).build(ds, config.model,
                                                seed=config.training.seed).to(device)
    cfg = config.training.replace(epochs=1, progress=False)
    return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=out_dir, device=device)


def bench_setting(argv: list[str], device, steps: int, epoch: bool, evaluate: bool,
                  out_dir: str) -> dict:
    """Median step seconds (after a warm-up step), optionally one epoch with validation
    and the full test evaluation, and the peak memory over all of it."""
    import torch

    tr = _trainer(argv, device, out_dir)
    order = torch.randperm(len(tr.train_index), generator=torch.Generator().manual_seed(0))
    bs = tr.config.batch_size
    _peak_reset(device)
    times = []
    for s in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        tr.train_step(order[s * bs:(s + 1) * bs])
        _sync(device)
        if s:
            times.append(time.perf_counter() - t0)
    res = {"step_seconds": round(statistics.median(times), 4)}
    if epoch:
        _sync(device)
        t0 = time.perf_counter()
        tr.train_epoch()
        tr.evaluator.evaluate(tr.model, tr.dataset.valid, desc="valid")
        _sync(device)
        res["epoch_with_validation_seconds"] = round(time.perf_counter() - t0, 2)
    if evaluate:
        _sync(device)
        t0 = time.perf_counter()
        m = tr.evaluator.evaluate(tr.model, tr.dataset.test, desc="test")
        _sync(device)
        res["test_eval_seconds"] = round(time.perf_counter() - t0, 2)
        res["test_mrr"] = round(m["mrr"], 4)
    res["peak_mb"] = _peak_mb(device)
    return res


def main() -> None:
    p = dataset_parser(__doc__)
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke)")
    p.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    p.add_argument("--parts", default="loss,default,distmult",
                   help="comma-separated parts to run")
    p.add_argument("--out-dir", default="/tmp/disenkg-bench-gpu", help="scratch run dir")
    a = p.parse_args()

    import torch

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device here (use --device cpu --small for a "
                         "smoke run)")
    data = ["--dataset", "umls" if a.small else a.dataset]
    if a.data_dir:
        data += ["--data-dir", a.data_dir]
    dev = ["--device", str(device)]
    small = ["--epochs", "1", "--channels", "20", "--init-dim", "16"] if a.small else []
    small_conv = ["--k-h", "5", "--k-w", "4", "--num-filters", "4",
                  "--kernel-size", "3"] if a.small else []
    authors = [*data, *dev, *small, *small_conv, "--preset", "none", "--model", "disenkgat",
               "--batch-size", "64" if a.small else "2048", "--lr", "0.001",
               "--scorer", "interacte", "--num-components", "3"]
    if not a.small:
        authors += ["--init-dim", "100", "--channels", "200", "--num-filters", "200",
                    "--kernel-size", "9", "--k-h", "20", "--k-w", "10"]
    plain = ["--encoder-impl", "chunked", "--loss-impl", "eager", "--head-impl", "eager",
             "--head-precision", "fp32", "--loss-precision", "fp32"]
    distmult = [*data, *dev, *small, "--preset", "none", "--model", "disenkgat",
                "--batch-size", "128", "--scorer", "distmult", "--composition", "cross",
                "--num-components", "2", "--num-layers", "2", "--mi-estimator", "club_s"]
    if not a.small:
        distmult += ["--init-dim", "100", "--channels", "200"]
    parts = a.parts.split(",")
    res: dict = {"device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else "cpu"), "torch": torch.__version__}
    steps = 2 if a.small else a.steps
    if "loss" in parts:
        res["loss"] = bench_loss(device, a.small, 2 if a.small else 10)
        print(json.dumps({"loss": res["loss"]}), flush=True)
    if "default" in parts:
        res["default"] = {
            "auto": bench_setting(authors, device, steps, True, True, a.out_dir),
            "plain": bench_setting([*authors, *plain], device, steps, False, True, a.out_dir)}
        d = res["default"]
        d["step_speedup"] = round(d["plain"]["step_seconds"] / d["auto"]["step_seconds"], 2)
        print(json.dumps({"default": d}), flush=True)
    if "distmult" in parts:
        tr_res = bench_setting(distmult, device, 1 if a.small else 3, True, False, a.out_dir)
        res["distmult"] = tr_res
        print(json.dumps({"distmult": tr_res}), flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
