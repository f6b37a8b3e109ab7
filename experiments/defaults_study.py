"""Do the plain command's defaults give good models? The plain command (with its built-in
search and without) against the tuned configuration on each KG, over seeds, plus the
``--bn0-scale`` remedy on the tuned configs.

    python experiments/defaults_study.py --data-dir ../shared/data/kg \\
        --out experiments/results/defaults.md [--seeds 3] [--reuse]

Variants (each ``python -m disenkg.run ... --seed S``, timed as wall clock):

* ``plain``: ``--dataset KG --preset none`` (UMLS / Kinship with their presets disabled;
  the cut KGs of ``experiments/make_user_kgs.py`` have none): what the plain command does
  on a KG it has no preset for: the size-derived defaults of :mod:`disenkg.defaults`, and
  on a small KG the built-in search (:mod:`disenkg.pipeline.search`) inside the same time
  budget.
* ``plain-nosearch``: the same with ``--search none``: the size-derived defaults alone.
* ``tuned``: UMLS / Kinship their presets; the cut KGs the UMLS preset (``--preset
  umls``), the configuration tuned on a KG of their scale (no published figure exists).
* ``tuned+bn0fixed`` (UMLS, Kinship): the preset with ``--bn0-scale fixed``.

Runs go seed by seed, UMLS and Kinship first, so a partial study still covers every
variant; the table (test MRR and Hits@10 mean +- std, best / run epochs, minutes) is
rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

KGS = ("umls", "kinship", "fb15k237-top400", "wn18rr-top2000", "kinship-top40", "umls-top40")
BUILT = ("fb15k237-top400", "wn18rr-top2000", "kinship-top40", "umls-top40")


def variants(kg: str) -> dict[str, list[str]]:
    out = {"plain": ["--preset", "none"], "plain-nosearch": ["--preset", "none", "--search",
                                                             "none"]}
    if kg in BUILT:
        out["tuned"] = ["--preset", "umls"]
    else:
        out["tuned"] = ["--preset", kg]
        out["tuned+bn0fixed"] = ["--preset", kg, "--bn0-scale", "fixed"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/kg", help="benchmark archives")
    p.add_argument("--kgs", nargs="+", default=list(KGS), choices=KGS, help="KGs to study")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--variants", nargs="+", default=None,
                   choices=list(dict.fromkeys(v for kg in KGS for v in variants(kg))),
                   help="run only these variants (default: every variant of each KG)")
    p.add_argument("--runs-dir", default="runs/defaults_study", help="run directories")
    p.add_argument("--out", default="experiments/results/defaults.md", help="markdown table")
    p.add_argument("--reuse", action="store_true", help="keep runs that have metrics.json")
    p.add_argument("--table-only", action="store_true",
                   help="only rewrite the table from the runs that have finished")
    a = p.parse_args()
    runs = Path(a.runs_dir)
    if any(k in BUILT for k in a.kgs) and not a.table_only:
        subprocess.run([sys.executable, "experiments/make_user_kgs.py", "--data-dir",
                        a.data_dir, "--out", str(runs / "kgs")], check=True)
    results: dict[tuple[str, str], list[dict]] = {}
    # the benchmark KGs (targets, the bn0 decision) over all seeds first, then the cut KGs
    groups = [[k for k in a.kgs if k not in BUILT], [k for k in a.kgs if k in BUILT]]
    order = [(seed, kg) for group in groups for seed in range(a.seeds) for kg in group]
    for seed, kg in order:
        dataset = str(runs / "kgs" / kg) if kg in BUILT else kg
        for name, flags in variants(kg).items():
            if a.variants is not None and name not in a.variants:
                continue
            out = runs / f"{kg}-{name}-s{seed}"
            if a.table_only and not (out / "metrics.json").exists():
                continue
            if not (a.table_only or (a.reuse and (out / "metrics.json").exists())):
                cmd = [sys.executable, "-m", "disenkg.run", "--dataset", dataset,
                       "--data-dir", a.data_dir, "--seed", str(seed), "--output-dir",
                       str(out), "--overwrite", "--no-progress", "--log-level", "WARNING",
                       *flags]
                print("running:", " ".join(cmd), flush=True)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
            m = json.loads((out / "metrics.json").read_text())
            wall = float((out / "wall_seconds.txt").read_text()) if (
                out / "wall_seconds.txt").exists() else float("nan")
            saved = json.loads((out / "config.json").read_text())
            found = saved.get("search")
            chosen = found["candidates"][found["chosen"]]["name"] if found else "-"
            results.setdefault((kg, name), []).append({**m, "wall": wall, "chosen": chosen})
            write_table(a, results)


def _ms(vals: list[float], fmt: str = ".4f") -> str:
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.fmean(vals), fmt)} +- {format(statistics.stdev(vals), fmt)}"


def write_table(a: argparse.Namespace, results: dict) -> None:
    rows = ["| KG | variant | seeds | test MRR | test H@10 | best / run epochs | minutes "
            "(wall, per seed) | minutes (training) | search chose | settings |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (kg, name), ms in results.items():
        cfg = ms[0]["config"]
        settings = (f"batch {cfg['batch_size']}, lr {cfg['lr']}, F {cfg.get('channels')}, "
                    f"filters {cfg['num_filters']}, epochs {cfg['epochs']}, patience "
                    f"{cfg['patience']}, min {cfg.get('min_epochs')}, K "
                    f"{cfg.get('num_components')}, dropout (hidden/feature) "
                    f"{cfg.get('hidden_dropout')}/{cfg.get('feature_dropout')}")
        rows.append(
            f"| {kg} | {name} | {len(ms)} | {_ms([m['test']['mrr'] for m in ms])} | "
            f"{_ms([m['test']['hits@10'] for m in ms])} | "
            + ", ".join(f"{m['best_epoch']}/{m['epochs_run']}" for m in ms)
            + " | " + ", ".join(f"{m['wall'] / 60:.1f}" for m in ms) + " | "
            f"{_ms([m['train_seconds'] / 60 for m in ms], '.1f')} | "
            + ", ".join(m["chosen"] for m in ms) + f" | {settings} |")
    text = (
        "# Defaults study\n\nWritten by `python experiments/defaults_study.py "
        f"--data-dir {a.data_dir} --seeds {a.seeds}"
        + (f" --variants {' '.join(a.variants)}" if a.variants else "")
        + "` on a 2-core CPU (filtered realistic ranks, both directions; mean +- std over "
        "seeds). `plain` = `python -m disenkg.run --dataset KG --preset none`; see the "
        "script's docstring for the variants and "
        "`experiments/make_user_kgs.py` for the cut KGs. Minutes (wall) include a search's "
        "candidates; minutes (training) are the final run's.\n\n" + "\n".join(rows) + "\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
