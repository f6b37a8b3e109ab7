"""Completing FB15k-237: wall time and peak RSS of the completion of every (entity,
relation) query in both directions, top-10 (issue 32), against the GEMM floor of its head.

``--model conve`` (default): trains the README's ConvE configuration for one epoch (enough
for timing) into ``--run-dir`` unless a run is already there, then runs ``python -m
disenkg.run complete`` in a fresh process. ``--model disenkgat``: the default DisenKGAT
(InteractE, K = 3, the authors' FB15k-237 setting), untrained (the time does not depend on
the weights; an epoch would take over an hour here), completed through the Python API
(:func:`disenkg.runs.complete.complete` into the same TSV writer) in a fresh process.

Reports JSON: wall time, peak RSS (VmHWM), queries per second, output size and the floor:
the FLOPs the completion computes over this CPU's fp32 GEMM peak (a 2048-cubed product,
median of 7). Per query and component: the conv :math:`2 C s^2 P`, the fc :math:`2 C P F`
and the 1-N scoring :math:`2 F N`, with :math:`P` the feature-map positions computed per
query: InteractE's :math:`2 k_h k_w` (circular padding); ConvE's :math:`k_h (k_w - s + 1)`,
the head and mixed bands of its banded evaluation (the relation-only band is computed once
per relation, :class:`~disenkg.nn.scorers.ConvEInteraction`). ``--relations N``
completes only the first N relations (a timed slice; the full time is extrapolated by the
query count and printed beside it).

    python experiments/bench_complete.py --data-dir ../shared/data/kg [--relations 12]
    python experiments/bench_complete.py --model disenkgat --relations 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import cpu_name

CHILD = """
import json, sys, time
from disenkg.run import main
t = time.perf_counter()
rc = main(sys.argv[1:])
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": int(hwm) / 1024}))
"""

DISENKGAT = """
import json, sys, time
import torch
from disenkg.datasets import KGDataset
from disenkg.models import DisenKGAT
from disenkg.nn.scorers import InteractEScorer
from disenkg.runs.complete import complete, open_writer
from disenkg.runs.trained import TrainedRun
data_dir, out, n_rel, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
torch.manual_seed(0)
ds = KGDataset.load("FB15k-237", data_dir=data_dir)
ei, et = ds.graph()
model = DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                  edge_index=ei, edge_type=et, scorer=InteractEScorer(embedding_dim=200))
run = TrainedRun(run_dir=None, model=model, dataset=ds, config={"args": {"loss": "bce"}})
w = open_writer(out, entity_names=ds.entities, relation_names=ds.relations)
for b in complete(run, k=k, relations=range(n_rel)):
    w.write(b)
w.close()
it = model.scorer.interaction
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"rc": 0, "seconds": time.perf_counter() - t, "peak_rss_mb": int(hwm) / 1024,
                  "head": dict(dim=it.embedding_dim, num_filters=it.num_filters * it.num_perm,
                               kernel_size=it.kernel_size, positions=2 * it.k_h * it.k_w,
                               num_components=model.num_components)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/kg", help="holds FB15k-237.tar.gz")
    p.add_argument("--run-dir", default="/tmp/disenkg-bench-complete/run",
                   help="the ConvE run (trained here for one epoch if missing)")
    p.add_argument("--output", default="/tmp/disenkg-bench-complete/all.tsv",
                   help="the completion's output")
    p.add_argument("--relations", type=int, default=None,
                   help="complete only the first N relations (extrapolate the rest)")
    p.add_argument("--top-k", type=int, default=10, help="answers per query")
    p.add_argument("--model", default="conve", choices=["conve", "disenkgat"],
                   help="conve: a one-epoch run of the README's configuration through the "
                        "command line; disenkgat: the default model, untrained, through "
                        "the Python API")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    import disenkg
    from disenkg.datasets import KGDataset

    out = Path(a.output)
    if out.exists():
        out.unlink()
    ds = KGDataset.load("FB15k-237", data_dir=a.data_dir)
    names = ds.relations
    n_rel = len(names) if a.relations is None else a.relations
    if a.model == "disenkgat":
        res = subprocess.run([sys.executable, "-c", DISENKGAT, a.data_dir, str(out),
                              str(n_rel), str(a.top_k)], capture_output=True, text=True,
                             env=env, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        head = r.pop("head")
    else:
        run = Path(a.run_dir)
        if not (run / "best.pt").exists():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "disenkg.run", "--config",
                            "experiments/configs/fb15k237_conve.toml", "--epochs", "1",
                            "--data-dir", a.data_dir, "--output-dir", str(run),
                            "--overwrite", "--no-progress", "--log-level", "WARNING"],
                           check=True, env=env)
            print(f"trained one epoch in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        cfg = disenkg.load_run(run).config["args"]
        cmd = [sys.executable, "-c", CHILD, "complete", "--run-dir", str(run), "--output",
               str(out), "--top-k", str(a.top_k), "--no-progress"]
        if a.relations is not None:
            cmd += ["--relations", *names[:n_rel]]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        head = dict(dim=cfg["embed_dim"], num_filters=cfg["num_filters"],
                    kernel_size=cfg["kernel_size"], num_components=1,
                    positions=cfg["k_h"] * (cfg["k_w"] - cfg["kernel_size"] + 1))
    n = ds.num_entities
    queries = n * n_rel * 2
    full = n * len(names) * 2
    import torch
    from bench_train_step import gemm_peak_gflops

    C, s2, P, F = head["num_filters"], head["kernel_size"] ** 2, head["positions"], head["dim"]
    flop = full * head["num_components"] * (2 * C * s2 * P + 2 * C * P * F + 2 * F * n)
    peak = gemm_peak_gflops(torch.float32, repeats=7)
    est = r["seconds"] * full / queries
    r.update(model=a.model, cpu=cpu_name(), queries=queries,
             queries_per_second=round(queries / r["seconds"]),
             output_mb=round(out.stat().st_size / 2**20, 1), full_queries=full,
             full_seconds_estimate=round(est), full_tflop=round(flop / 1e12, 1),
             gemm_gflops_fp32=round(peak, 1), floor_seconds=round(flop / peak / 1e9),
             floor_ratio=round(est / (flop / peak / 1e9), 2))
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
