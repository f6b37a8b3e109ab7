"""A training run's results folder for ``experiments/results/``: its ``history.csv``,
``metrics.json``, the learning-curve PNGs and a Markdown page with the command, the test
metrics (both directions and each), the best epoch and the training time.

    python experiments/report_run.py runs/fb15k237_conve \\
        --out experiments/results/fb15k237_conve \\
        --command "python -m disenkg.run --config experiments/configs/fb15k237_conve.toml ..." \\
        [--log runs/fb15k237_conve.log --pauses runs/conve_pauses.log]

Training time: the sum of the history's per-epoch seconds (training and validation). When
the run shared the machine and was paused (``kill -STOP`` / ``-CONT``, one
``<unix time> STOP|CONT`` line per event in ``--pauses``), the paused time inside each
epoch, located with the epoch end times of the run's log (``--log``), is subtracted and
both figures are reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

EPOCH_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO .* epoch (\d+) loss")


def epoch_ends(log: Path) -> dict[int, float]:
    """Unix time at which each epoch's log line was written (the log's clock is UTC)."""
    ends = {}
    for line in log.read_text(errors="replace").splitlines():
        m = EPOCH_LINE.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
            ends[int(m.group(3))] = t.timestamp() + int(m.group(2)) / 1000
    return ends


def pause_intervals(path: Path) -> list[tuple[float, float]]:
    """``[(stop, cont), ...]`` from ``<unix time> STOP|CONT`` lines (an unmatched STOP
    lasts until now)."""
    out, start = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("STOP", "CONT"):
            raise SystemExit(f"{path}:{n}: expected '<unix time> STOP|CONT', got {line!r}")
        t = float(parts[0])
        if parts[1] == "STOP":
            start = t
        elif start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, datetime.now(timezone.utc).timestamp()))
    return out


def active_seconds(history: list[dict], ends: dict[int, float],
                   pauses: list[tuple[float, float]]) -> list[float]:
    """Each epoch's seconds minus the paused time inside it."""
    out = []
    for row in history:
        e, secs = int(row["epoch"]), float(row["seconds"])
        if e not in ends:
            out.append(secs)
            continue
        lo, hi = ends[e] - secs, ends[e]
        paused = sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in pauses)
        out.append(secs - paused)
    return out


def write_page(run: Path, out: Path, command: str, title: str, history: list[dict],
               active: list[float] | None) -> str:
    m = json.loads((run / "metrics.json").read_text())
    test = m["test"]
    rows = ["| direction | MRR | MR | Hits@1 | Hits@3 | Hits@10 |", "|---|---|---|---|---|---|"]
    for name, block in (("both", test), ("head", test["head"]), ("tail", test["tail"])):
        rows.append(f"| {name} | {block['mrr']:.4f} | {block['mr']:.1f} | "
                    f"{block['hits@1']:.4f} | {block['hits@3']:.4f} | {block['hits@10']:.4f} |")
    total = sum(float(r["seconds"]) for r in history)
    timing = f"training and validation {total / 3600:.2f} h over {len(history)} epochs"
    if active is not None:
        timing += (f" on the clock; {sum(active) / 3600:.2f} h with the machine's paused "
                   "time taken out (the run was paused while other work used the CPU)")
    page = [f"# {title}", "", "```bash", command, "```", "",
            f"Best validation epoch {m['best_epoch']} of {m['epochs_run']}; {timing}.",
            "", "Test, filtered, realistic ranks:", "", *rows, "",
            f"Validation MRR at epoch 1: {float(history[0]['valid_mrr']):.4f} (rerun epoch 1 "
            "of the command to compare).", "",
            "Files: `history.csv` (every epoch), `metrics.json`, `curves.png` (the learning "
            "curves).", ""]
    text = "\n".join(page)
    (out / "README.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run directory")
    p.add_argument("--out", type=Path, required=True, help="the results folder to write")
    p.add_argument("--command", required=True, help="the command that made the run")
    p.add_argument("--title", default=None, help="page title (default: the folder name)")
    p.add_argument("--log", type=Path, default=None, help="the run's log (epoch end times)")
    p.add_argument("--pauses", type=Path, default=None, help="the pause log")
    a = p.parse_args()
    for name in ("history.csv", "metrics.json"):
        if not (a.run / name).is_file():
            raise SystemExit(f"{a.run / name} does not exist: is the run finished?")
    a.out.mkdir(parents=True, exist_ok=True)
    for name in ("history.csv", "metrics.json"):
        shutil.copyfile(a.run / name, a.out / name)
    with open(a.run / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    active = None
    if a.pauses is not None:
        if a.log is None:
            raise SystemExit("--pauses needs --log (the epoch end times)")
        active = active_seconds(history, epoch_ends(a.log), pause_intervals(a.pauses))
    subprocess.run([sys.executable, "-m", "disenkg.run", "plot", "--run-dir", str(a.run),
                    "--out", str(a.out), "--no-progress"], check=True)
    print(write_page(a.run, a.out, a.command, a.title or a.out.name, history, active))


if __name__ == "__main__":
    main()
