"""Completing FB15k-237 with a ConvE run: wall time and peak RSS of ``python -m disenkg.run
complete`` for every (entity, relation) query in both directions, top-10 (issue 32).

Trains the README's ConvE configuration for one epoch (enough for timing) into
``--run-dir`` unless a run is already there, then runs the completion in a fresh process
and reports its wall time, peak RSS (VmHWM), queries per second and output size as JSON.
``--relations N`` completes only the first N relations (a timed slice; the full time is
extrapolated by the query count and printed beside it).

    python experiments/bench_complete.py --data-dir ../shared/data/kg [--relations 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, time
from disenkg.run import main
t = time.perf_counter()
rc = main(sys.argv[1:])
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": int(hwm) / 1024}))
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
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = Path(a.run_dir)
    if not (run / "best.pt").exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "disenkg.run", "--config",
                        "experiments/configs/fb15k237_conve.toml", "--epochs", "1",
                        "--data-dir", a.data_dir, "--output-dir", str(run), "--overwrite",
                        "--no-progress", "--log-level", "WARNING"], check=True, env=env)
        print(f"trained one epoch in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    import disenkg

    trained = disenkg.load_run(run)
    names = trained.dataset.relations
    rels = names if a.relations is None else names[:a.relations]
    out = Path(a.output)
    if out.exists():
        out.unlink()
    cmd = [sys.executable, "-c", CHILD, "complete", "--run-dir", str(run), "--output",
           str(out), "--top-k", str(a.top_k), "--no-progress"]
    if a.relations is not None:
        cmd += ["--relations", *rels]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    n = trained.dataset.num_entities
    queries = n * len(rels) * 2
    full = n * len(names) * 2
    r.update(cpu=_cpu(), queries=queries, queries_per_second=round(queries / r["seconds"]),
             output_mb=round(out.stat().st_size / 2**20, 1),
             full_queries=full, full_seconds_estimate=round(r["seconds"] * full / queries))
    print(json.dumps(r, indent=1))


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return "unknown"


if __name__ == "__main__":
    main()
