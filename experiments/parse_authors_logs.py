"""The authors' training logs as tables, to compare runs of this package with them epoch by
epoch.

    python experiments/parse_authors_logs.py PATH/TO/DisenKGAT \\
        [--out experiments/results/authors_fb15k237.csv]

PATH is a checkout of the authors' repository (junkangwu/DisenKGAT, kept outside this
project); every file under its ``log/`` is read. Each validation block of a log

    <time> - <run> - [INFO] - [Evaluating Epoch 12 valid]:
        MRR: Tail : 0.31, Head : 0.15, Avg : 0.23

becomes one row ``log, dataset, score_func, opn, num_factors, batch_size, epoch,
valid_mrr, valid_mrr_tail, valid_mrr_head, hours`` (``epoch`` counted from 1 as this
package counts; the authors log from 0; ``hours`` since the log's first line). The final
test block of each log, when present, goes to the ``_test.csv`` beside ``--out`` (MRR, MR,
Hits@1/3/10, tail / head / average; ``best_epoch``: the epoch the authors' code restored
and tested, which their log names in the test block's header). A line that does not
parse where a value is expected is an error naming the file and line.
"""

from __future__ import annotations

import argparse
import ast
import csv
import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - ")
EVAL = re.compile(r"\[Evaluating Epoch (\d+) (valid|test)\]")
METRIC = re.compile(r"^\s*(MRR|MR|Hit-1|Hit-3|Hit-10): Tail : ([-\d.e]+), Head : ([-\d.e]+), "
                    r"Avg : ([-\d.e]+)\s*$")
SETTINGS = ("dataset", "score_func", "opn", "num_factors", "batch_size")
VALID_COLUMNS = ("log", *SETTINGS, "epoch", "valid_mrr", "valid_mrr_tail", "valid_mrr_head",
                 "hours")
TEST_COLUMNS = ("log", *SETTINGS, "best_epoch", *(f"test_{m}_{side}" for m in
                                             ("mrr", "mr", "hits@1", "hits@3", "hits@10")
                                             for side in ("avg", "tail", "head")))
NAMES = {"MRR": "mrr", "MR": "mr", "Hit-1": "hits@1", "Hit-3": "hits@3", "Hit-10": "hits@10"}


def _time(line: str) -> datetime | None:
    m = STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") if m else None


def _settings(path: Path, first: str) -> dict[str, object]:
    start = first.find("{'name'")
    if start < 0:
        raise ValueError(f"{path}:1: expected the run's settings dict, got {first[:80]!r}")
    args = ast.literal_eval(first[start:].strip())  # a Python literal, never executed
    return {k: args.get(k) for k in SETTINGS}


def parse_log(path: Path) -> tuple[list[dict], list[dict]]:
    """Validation rows and test rows of one log."""
    lines = path.read_text(errors="replace").splitlines()
    if not lines:
        return [], []
    settings = {"log": path.name, **_settings(path, lines[0])}
    t0 = _time(lines[0])
    valid, test = [], []
    for i, line in enumerate(lines):
        m = EVAL.search(line)
        if not m:
            continue
        epoch, split = int(m.group(1)) + 1, m.group(2)
        metrics = {}
        for j in range(i + 1, min(i + 8, len(lines))):
            if STAMP.match(lines[j]):
                break  # the next log record: the block has ended
            mm = METRIC.match(lines[j])
            if mm:
                metrics[NAMES[mm.group(1)]] = tuple(float(v) for v in mm.group(2, 3, 4))
            elif lines[j].strip() and "MRR" in lines[j]:
                raise ValueError(f"{path}:{j + 1}: expected 'MRR: Tail : x, Head : y, Avg : z', "
                                 f"got {lines[j].strip()[:80]!r}")
        if "mrr" not in metrics:
            raise ValueError(f"{path}:{i + 1}: no MRR line after {line.strip()[-40:]!r}")
        now = _time(line)
        if split == "valid":
            tail, head, avg = metrics["mrr"]
            valid.append({**settings, "epoch": epoch, "valid_mrr": avg, "valid_mrr_tail": tail,
                          "valid_mrr_head": head,
                          "hours": round((now - t0).total_seconds() / 3600, 4)
                          if now and t0 else ""})
        else:
            row = {**settings, "best_epoch": epoch}  # the authors test the best epoch
            for name, (tail, head, avg) in metrics.items():
                row.update({f"test_{name}_avg": avg, f"test_{name}_tail": tail,
                            f"test_{name}_head": head})
            test.append(row)
    return valid, test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", help="a checkout of the authors' repository")
    p.add_argument("--out", default="experiments/results/authors_fb15k237.csv",
                   help="validation table; the test table is written beside it")
    a = p.parse_args(argv)
    logs = sorted(f for f in (Path(a.reference) / "log").iterdir() if f.is_file())
    if not logs:
        print(f"{a.reference}/log: no log files", file=sys.stderr)
        return 2
    valid, test = [], []
    for f in logs:
        v, t = parse_log(f)
        valid += v
        test += t
        print(f"{f.name}: {len(v)} validation epochs, best valid MRR "
              f"{max((r['valid_mrr'] for r in v), default=float('nan')):.4f}"
              + (f", test MRR {t[-1]['test_mrr_avg']:.4f}" if t else ", no test block"))
    out = Path(a.out)
    for path, rows, cols in ((out, valid, VALID_COLUMNS),
                             (out.with_name(out.stem + "_test.csv"), test, TEST_COLUMNS)):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, restval="")
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
