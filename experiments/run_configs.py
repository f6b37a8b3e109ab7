"""Run a list of configs through the CLI and write a markdown results table.

    python experiments/run_configs.py experiments/configs/umls.toml \
        experiments/configs/kinship.toml --out experiments/results/small_kgs.md \
        [-- extra CLI flags for every run]

Each config runs as ``python -m disenkg.run --config CFG --output-dir runs/<stem> --overwrite``
(a previous run of the same config is replaced); the table
has test MRR, MR, Hits@1/3/10 (realistic ranks, both directions), best epoch, epochs run and
training seconds, read from each run's ``metrics.json``. Existing metrics are reused
with ``--reuse``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="TOML config files")
    p.add_argument("--out", required=True, help="markdown file to write")
    p.add_argument("--runs-dir", default="runs", help="parent of the per-config output dirs")
    p.add_argument("--reuse", action="store_true", help="skip configs whose metrics exist")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = []
    for cfg in args.configs:
        out_dir = Path(args.runs_dir) / Path(cfg).stem
        metrics_file = out_dir / "metrics.json"
        t0 = time.perf_counter()
        if not (args.reuse and metrics_file.exists()):
            cmd = [sys.executable, "-m", "disenkg.run", "--config", cfg, "--output-dir",
                   str(out_dir), "--no-progress", "--overwrite", *extra]
            print("running:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        m = json.loads(metrics_file.read_text())
        t = m["test"]
        rows.append(f"| {Path(cfg).name} | {m['dataset']} | {m['model']} | {t['mrr']:.4f} | "
                    f"{t['mr']:.2f} | {t['hits@1']:.4f} | {t['hits@3']:.4f} | "
                    f"{t['hits@10']:.4f} | {m['best_epoch']} / {m['epochs_run']} | "
                    f"{m['train_seconds']:.0f} | {wall:.0f} |")
    header = ("| config | dataset | model | test MRR | MR | H@1 | H@3 | H@10 | best / run "
              "epochs | train s | wall s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    extra_note = f" with extra flags `{' '.join(extra)}`" if extra else ""
    text = (f"# Results\n\nWritten by `python experiments/run_configs.py "
            f"{' '.join(args.configs)} --out {args.out}`{extra_note} on a 2-core CPU; "
            f"filtered realistic ranks, both directions.\n\n{header}\n" + "\n".join(rows) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
