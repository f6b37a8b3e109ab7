"""Benchmark one DisenKGAT training step (incl. the MI estimator step) and a full evaluation.

Runs the default model (InteractE, cross, K=3, init_dim 100, F=200, 1 layer, club_b,
alpha 0.1, dot_weight, dot_rel, after, batch 2048, lr 1e-3, label smoothing 0.1) and ends
with one JSON line ``{"step_seconds": <median>, "peak_rss_mb": ..., "eval_seconds": ...}``,
including the head's GEMM floor: ``head_tflop`` (the conv, fc and 1-N scoring FLOPs of a
step, forward and backward), ``gemm_gflops`` (a 2048-cubed product at the head's dtype on
this CPU), ``floor_seconds`` (the first over the second) and ``floor_ratio`` (the step over
its floor).

``--impl eager`` is the plain materialising baseline of the same model, as the original
code runs it: every op ``eager`` (all edges at once, ``(E, K, F)`` tensors; un-chunked
scorer feature maps; the ``(B, K, N)`` logits of the loss), the encoder re-run for the
estimator step (as the package default; ``--no-mi-recompute`` saves that pass), and
(with ``--eval``) the encoder re-run for every evaluation batch of 2048 queries, one row
per test triple (the default scores each distinct query once).
``--impl auto`` is the package default (native edge kernels where they apply, the
channels-last GEMM conv head, the fused loss); ``--impl chunked`` every op ``chunked``
(the same bounded-memory schedules in pure PyTorch, no C kernels). The words are the
package's one implementation vocabulary (:mod:`disenkg.ops.impls`). ``--precision``
sets the command line's ``--head-precision`` and ``--loss-precision`` together
(``auto``: bfloat16 head GEMMs and bfloat16-input loss GEMMs on CPUs with AMX /
AVX512-BF16, else fp32; the eager baseline is always fp32). ``--compare`` runs auto
in fp32, auto at ``--precision`` and eager (last: see the comment in :func:`main`) in
subprocesses and prints the ratios. Like the command line, the script enables
transparent huge pages for PyTorch (``THP_MEM_ALLOC_ENABLE=1``, inherited by the
subprocesses, so the baseline gets them too).

    python experiments/bench_train_step.py --dataset FB15k-237 --steps 3 [--impl eager] [--eval]

``--reference DIR`` times the authors' code side by side: DIR is a checkout of their
repository (junkangwu/DisenKGAT, fetched by you, kept outside this project); it is copied
into a scratch directory with the two small patches of ``compare_reference.py`` and the
dataset's split files, and their ``run.py`` runs unmodified in a subprocess
(``experiments/reference_step.py``: the steps are timed between the batches their training
loader hands out) with the same model (their defaults are this script's: InteractE, cross,
K = 3, batch 2048, CLUB with the estimator step) on the CPU: ``-gpu -1 -num_workers 0
-mi_train -mi_drop -batch B``. Then the package's default step runs in its own subprocess,
and the script prints both step times, both peak RSS, and the ratios. Their extra
dependency ``ordered-set`` goes outside the project: ``pip install --target DIR2
ordered-set`` and ``--reference-pythonpath DIR2``.

    python experiments/bench_train_step.py --dataset FB15k-237 --data-dir ../shared/data/kg \
        --steps 3 --reference PATH/TO/DisenKGAT --reference-pythonpath DIR2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from disenkg.hugepages import enable_huge_pages

enable_huge_pages()  # before torch is imported (see disenkg/hugepages.py)

from benchlib import dataset_parser, status_mb  # noqa: E402


def peak_rss_mb() -> float:
    return status_mb("VmHWM")


class PerBatchEncoding:
    """Evaluation wrapper re-running the encoder for every batch (the original protocol)."""

    def __init__(self, model):
        self.model = model

    def encode(self):
        return None

    def score(self, reps, heads, rels):
        return self.model.score(self.model.encode(), heads, rels)

    def parameters(self):
        return self.model.parameters()

    def eval(self):
        self.model.eval()

    def train(self):
        self.model.train()

    @property
    def training(self):
        return self.model.training


def build_trainer(args, precision: str, *, mi_recompute: bool = True):
    """The default model and its trainer (``args``: dataset, data_dir, impl, batch_size,
    image_chunk, eval_batch_size), seeded, with the head and the loss at ``precision``."""
    import torch

    from disenkg.datasets import KGDataset
    from disenkg.models import DisenKGAT
    from disenkg.nn.scorers import InteractEScorer
    from disenkg.training import LinkTrainer, TrainConfig

    torch.manual_seed(0)
    eager = args.impl == "eager"
    ds = KGDataset.load(args.dataset, data_dir=args.data_dir)
    ei, et = ds.graph()
    model = DisenKGAT(
        num_entities=ds.num_entities, num_relations=ds.num_relations,
        edge_index=ei, edge_type=et,
        scorer=InteractEScorer(embedding_dim=200, image_chunk=args.image_chunk,
                               impl=args.impl, precision=precision),
        encoder_impl=args.impl, mi_recompute=eager or mi_recompute)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-3, label_smoothing=0.1,
                      loss_impl=args.impl, progress=False,
                      loss_precision="fp32" if eager else precision,
                      eval_batch_size=2048 if eager else args.eval_batch_size)
    return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir="/tmp/bench-unused")


def gemm_peak_gflops(dtype, n: int = 2048, repeats: int = 3) -> float:
    """This CPU's GEMM throughput at ``dtype``: an ``n``-cubed product, median of
    ``repeats`` after a warm-up (GFLOPS); a dtype this CPU multiplies slowly (a 512-cubed
    product over 0.2 s / 64) gets a smaller ``n``, so the measure stays near a second."""
    import torch

    a = torch.randn(512, 512).to(dtype)
    torch.mm(a, a)
    t0 = time.perf_counter()
    torch.mm(a, a)
    t512 = time.perf_counter() - t0
    n = int(min(n, max(512, 512 * (0.2 / max(t512, 1e-9)) ** (1 / 3))))
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def gemm_floor(model, ds, batch: int, dtype, step: float) -> dict:
    """The head's GEMM floor of one step: its FLOPs (conv, fc and the 1-N scoring, forward
    and backward, :func:`disenkg.defaults.head_flops`) over this CPU's GEMM peak at the
    head's dtype; ``floor_ratio`` = the step over that floor."""
    from disenkg.defaults import head_flops

    it = model.scorer.interaction
    flops = head_flops(queries=batch, num_entities=ds.num_entities, dim=it.embedding_dim,
                       k_h=it.k_h, k_w=it.k_w, num_filters=it.num_filters * it.num_perm,
                       kernel_size=it.kernel_size, num_components=model.num_components)
    peak = gemm_peak_gflops(dtype)
    floor = flops / (peak * 1e9)
    return {"head_tflop": round(flops / 1e12, 3), "gemm_gflops": round(peak, 1),
            "floor_seconds": float(f"{floor:.4g}"), "floor_ratio": round(step / floor, 2)}


def run(args) -> dict:
    import torch

    from disenkg.ops.conv_head import compute_dtype

    eager = args.impl == "eager"
    precision = "fp32" if eager else args.precision
    trainer = build_trainer(args, precision, mi_recompute=args.mi_recompute)
    ds, model = trainer.dataset, trainer.model
    dtype = compute_dtype(precision, torch.empty(0), args.impl)
    order = torch.randperm(len(trainer.train_index), generator=torch.Generator().manual_seed(0))
    times = []
    for s in range(args.steps + 1):  # the first step is a warm-up
        ids = order[s * args.batch_size:(s + 1) * args.batch_size]
        t0 = time.perf_counter()
        loss = trainer.train_step(ids)
        dt = time.perf_counter() - t0
        print(f"step {s}: {dt:.2f} s loss {loss:.4f} peak RSS {peak_rss_mb():.0f} MB",
              file=sys.stderr, flush=True)
        if s > 0:
            times.append(dt)
    out = {"impl": args.impl, "precision": precision, "head_dtype": str(dtype)[6:],
           "step_seconds": statistics.median(times), "mi_recompute": model.mi_recompute,
           "peak_rss_mb": round(peak_rss_mb(), 1), "threads": torch.get_num_threads()}
    out.update(gemm_floor(model, ds, args.batch_size, dtype, out["step_seconds"]))
    if args.eval:
        ev = trainer.evaluator
        ev.distinct_queries = not eager  # the original scores one row per test triple
        target = PerBatchEncoding(model) if eager else model
        t0 = time.perf_counter()
        metrics = ev.evaluate(target, ds.test, desc="test")
        out["eval_seconds"] = round(time.perf_counter() - t0, 2)
        out["eval_mrr_untrained"] = round(metrics["mrr"], 5)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def _archive(args) -> Path:
    found = Path(args.dataset)
    if not found.exists():
        found = Path(args.data_dir or ".") / f"{args.dataset}.tar.gz"
    if not (found.is_file() and found.name.endswith(".tar.gz")):
        raise SystemExit(f"--reference needs the dataset as a .tar.gz archive of "
                         f"train/valid/test.txt; not found: {found}")
    return found


def side_by_side(args) -> dict:
    """The authors' step (their code, in a subprocess) and the package's default step (in
    a subprocess), on the same dataset, batch and model; prints both and the ratios."""
    import os
    import tempfile

    from compare_reference import prepare_reference

    here = Path(__file__).resolve().parent
    archive = _archive(args)
    name = archive.name.removesuffix(".tar.gz")
    with tempfile.TemporaryDirectory(prefix="disenkg-ref-") as scratch:
        ref = prepare_reference(Path(args.reference), Path(scratch), archive, name)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [
            str(ref), args.reference_pythonpath, env.get("PYTHONPATH")]))
        cmd = [sys.executable, str(here / "reference_step.py"), "--steps", str(args.steps),
               "--", "-name", "bench", "-data", name, "-gpu", "-1", "-num_workers", "0",
               "-batch", str(args.batch_size), "-test_batch", str(args.batch_size),
               "-mi_train", "-mi_drop", "-epoch", "1"]
        res = subprocess.run(cmd, cwd=ref, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"the authors' code failed ({' '.join(cmd)}):\n"
                             f"{res.stderr[-3000:]}")
        theirs = json.loads(res.stdout.strip().splitlines()[-1])
    cmd = [sys.executable, __file__, "--dataset", args.dataset, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--precision", args.precision]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if not args.mi_recompute:
        cmd.append("--no-mi-recompute")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the package's step failed:\n{res.stderr[-3000:]}")
    ours = json.loads(res.stdout.strip().splitlines()[-1])
    out = {"dataset": name, "batch_size": args.batch_size, "reference": theirs,
           "package": ours,
           "step_ratio": round(theirs["step_seconds"] / ours["step_seconds"], 2),
           "memory_ratio": round(theirs["peak_rss_mb"] / ours["peak_rss_mb"], 2)}
    print(f"authors' code: {theirs['step_seconds']:.2f} s per step, peak RSS "
          f"{theirs['peak_rss_mb']:.0f} MB; package ({ours['head_dtype']} head): "
          f"{ours['step_seconds']:.2f} s, {ours['peak_rss_mb']:.0f} MB; "
          f"{out['step_ratio']}x faster, {out['memory_ratio']}x less memory", flush=True)
    print(json.dumps(out))
    return out


def main() -> None:
    p = dataset_parser(__doc__)
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--batch-size", type=int, default=2048, help="queries per step")
    p.add_argument("--impl", default="auto", choices=["auto", "chunked", "eager"],
                   help="every op's impl: the package default, the PyTorch chunked "
                        "schedules, or the materialising baseline")
    p.add_argument("--eval", action="store_true", help="also time a full test evaluation")
    p.add_argument("--eval-batch-size", type=int, default=256, help="queries per eval batch")
    p.add_argument("--image-chunk", type=int, default=256,
                   help="scorer images per checkpointed chunk")
    p.add_argument("--precision", "--head-precision", default="auto",
                   choices=["auto", "fp32", "bf16"],
                   help="the InteractE head's and the loss's GEMMs (the command line's "
                        "--head-precision and --loss-precision; not for --impl eager; auto = "
                        "bf16 on CPUs with AMX / AVX512-BF16, as the command line)")
    p.add_argument("--mi-recompute", action=argparse.BooleanOptionalAction, default=True,
                   help="the estimator step on a fresh encoder pass (the default, as the "
                        "command line); --no-mi-recompute reuses the step's embeddings "
                        "(the eager baseline always re-runs the encoder)")
    p.add_argument("--compare", action="store_true",
                   help="run auto in fp32, (unless --precision fp32) auto at "
                        "--precision, and eager in subprocesses and print the ratios")
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="a checkout of the authors' DisenKGAT: time their step and the "
                        "package's side by side (see the docstring)")
    p.add_argument("--reference-pythonpath", default=None, metavar="DIR",
                   help="where their extra dependency (ordered-set) is installed")
    args = p.parse_args()
    if args.reference:
        side_by_side(args)
        return
    if args.compare:
        # The eager baseline runs last: its 19 GB leave memory fragmented, and the next
        # process's huge-page faults then pay for compaction (the default step measured
        # 10.8 s right after it vs 7.9 s on its own).
        runs = [("auto", "fp32")]
        if args.precision != "fp32":
            runs.append(("auto", args.precision))
        runs.append(("eager", "fp32"))
        res = []
        for impl, precision in runs:
            cmd = [sys.executable, __file__, "--dataset", args.dataset, "--steps",
                   str(args.steps), "--batch-size", str(args.batch_size), "--impl", impl,
                   "--precision", precision]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            if args.eval:
                cmd.append("--eval")
            if not args.mi_recompute:
                cmd.append("--no-mi-recompute")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(res[-1]), flush=True)
        n = res[-1]
        for c in res[:-1]:
            print(f"auto, head {c['head_dtype']}: step speed-up "
                  f"{n['step_seconds'] / c['step_seconds']:.2f}x, peak RSS "
                  f"{n['peak_rss_mb']:.0f} -> {c['peak_rss_mb']:.0f} MB"
                  + (f", eval speed-up {n['eval_seconds'] / c['eval_seconds']:.2f}x"
                     if args.eval else ""))
        return
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
