"""experiments/defaults_study.py: the table from finished runs, and ``--variants``."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _run(path, mrr: float, seconds: float, chosen: str | None = None) -> None:
    path.mkdir(parents=True)
    search = None if chosen is None else {"chosen": 1, "candidates": [
        {"name": "size-derived"}, {"name": chosen}]}
    path.joinpath("config.json").write_text(json.dumps({"search": search}))
    cfg = {"batch_size": 128, "lr": 0.003, "channels": 100, "num_filters": 32,
           "epochs": 500, "patience": 100, "min_epochs": 100}
    path.joinpath("metrics.json").write_text(json.dumps(
        {"test": {"mrr": mrr, "hits@10": 0.99}, "best_epoch": 7, "epochs_run": 9,
         "train_seconds": seconds, "config": cfg}))
    path.joinpath("wall_seconds.txt").write_text(f"{seconds + 6}\n")


def _table(tmp_path, *args: str) -> list[str]:
    out = tmp_path / "table.md"
    subprocess.run([sys.executable, str(REPO / "experiments" / "defaults_study.py"),
                    "--kgs", "umls", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
                    "--table-only", *args], check=True, cwd=REPO, capture_output=True)
    return [line for line in out.read_text().splitlines() if line.startswith("| umls")]


def test_table_only_and_variants(tmp_path):
    runs = tmp_path / "runs"
    _run(runs / "umls-plain-s0", 0.90, 60.0)
    _run(runs / "umls-plain-s1", 0.92, 120.0, chosen="lr x3")
    _run(runs / "umls-tuned-s0", 0.80, 30.0)
    rows = _table(tmp_path, "--seeds", "2")
    assert [r.split(" | ")[1] for r in rows] == ["plain", "tuned"]
    plain = rows[0].split(" | ")
    assert plain[2] == "2" and plain[3] == "0.9100 +- 0.0141"  # mean +- sample std
    assert plain[6] == "1.1, 2.1" and plain[7] == "1.5 +- 0.7"  # wall, training minutes
    assert plain[8] == "-, lr x3"  # what each seed's search chose
    rows = _table(tmp_path, "--seeds", "2", "--variants", "plain")
    assert [r.split(" | ")[1] for r in rows] == ["plain"]
    assert "--variants plain" in (tmp_path / "table.md").read_text()
