"""Training with the bfloat16 head and loss GEMMs against fp32: loss trajectory and
validation MRR.

Builds the default DisenKGAT model of ``bench_train_step.py`` twice from the same seed,
trains each for ``--steps`` steps on the same batches (same dropout draws), once in fp32
and once with ``--head-precision bf16 --loss-precision bf16``, and prints both loss
curves, the largest relative loss difference and both models' filtered validation MRR
(first ``--valid`` triples). Full training runs of the small KGs in both precisions are
in ``experiments/results/``.

    python experiments/precision_study.py --dataset FB15k-237 --steps 40
"""

from __future__ import annotations

import json
import sys
import time

from disenkg.hugepages import enable_huge_pages

enable_huge_pages()  # before torch is imported (see disenkg/hugepages.py)

from benchlib import dataset_parser  # noqa: E402


def main() -> None:
    import torch
    from bench_train_step import build_trainer

    p = dataset_parser(__doc__)
    p.add_argument("--steps", type=int, default=40, help="training steps per precision")
    p.add_argument("--batch-size", type=int, default=2048, help="queries per step")
    p.add_argument("--image-chunk", type=int, default=256, help="scorer images per chunk")
    p.add_argument("--valid", type=int, default=2000,
                   help="validation triples scored at the end (0 = all)")
    args = p.parse_args()
    args.impl, args.eval_batch_size = "auto", 256
    res = {}
    for precision in ("fp32", "bf16"):
        trainer = build_trainer(args, precision)
        order = torch.randperm(len(trainer.train_index),
                               generator=torch.Generator().manual_seed(0))
        losses = []
        t0 = time.perf_counter()
        for s in range(args.steps):
            ids = order[(s * args.batch_size) % len(order):][:args.batch_size]
            losses.append(trainer.train_step(ids))
            print(f"{precision} step {s}: loss {losses[-1]:.5f}", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - t0
        valid = trainer.dataset.valid
        if args.valid:
            valid = valid[:args.valid]
        mrr = trainer.evaluator.evaluate(trainer.model, valid, desc="valid")["mrr"]
        res[precision] = {"losses": [round(v, 6) for v in losses], "valid_mrr": round(mrr, 5),
                          "train_seconds": round(seconds, 1)}
        print(json.dumps({precision: res[precision]}), flush=True)
    a, b = res["fp32"]["losses"], res["bf16"]["losses"]
    rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    print(json.dumps({"steps": args.steps, "max_rel_loss_diff": round(rel, 5),
                      "final_loss": {"fp32": a[-1], "bf16": b[-1]},
                      "valid_mrr": {k: v["valid_mrr"] for k, v in res.items()}}))


if __name__ == "__main__":
    main()
