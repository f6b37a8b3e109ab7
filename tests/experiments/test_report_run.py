"""experiments/report_run.py: paused time taken out of the epochs it fell in, and the
results folder of a real (tiny) run."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, kg_archive

sys.path.insert(0, str(REPO / "experiments"))
report = pytest.importorskip("report_run")


def test_pauses_are_subtracted_from_the_epochs_they_overlap(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("2026-11-28 10:00:10,000 INFO disenkg.training.link: epoch 1 loss 0.5 "
                   "valid MRR 0.1\n"
                   "noise line\n"
                   "2026-11-28 10:00:30,500 INFO disenkg.training.link: epoch 2 loss 0.4\n")
    ends = report.epoch_ends(log)
    t1 = ends[1]
    assert ends[2] - t1 == pytest.approx(20.5)
    pauses = tmp_path / "p.log"
    pauses.write_text(f"{t1 - 4} STOP\n{t1 + 2} CONT\n{t1 + 10} STOP\n{t1 + 15} CONT\n")
    history = [{"epoch": "1", "seconds": "10"}, {"epoch": "2", "seconds": "20.5"},
               {"epoch": "3", "seconds": "7"}]
    active = report.active_seconds(history, ends, report.pause_intervals(pauses))
    assert active == pytest.approx([6.0, 13.5, 7.0])  # 4 s, then 2 + 5 s paused
    bad = tmp_path / "bad.log"
    bad.write_text("123 PAUSE\n")
    with pytest.raises(SystemExit, match="bad.log:1"):
        report.pause_intervals(bad)


def test_results_folder_of_a_tiny_run(tmp_path, monkeypatch):
    from disenkg.cli.link import main as link_main

    run = tmp_path / "run"
    link_main(["--dataset", str(kg_archive("umls")), "--model", "conve", "--epochs", "2",
               "--no-progress", "--output-dir", str(run), "--embed-dim", "20", "--k-h", "5",
               "--k-w", "4", "--num-filters", "4", "--batch-size", "256"])
    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["report_run.py", str(run), "--out", str(out),
                                      "--command", "python -m disenkg.run ..."])
    pytest.importorskip("matplotlib")
    report.main()
    text = (out / "README.md").read_text()
    assert "| both |" in text and "over 2 epochs" in text
    assert (out / "history.csv").read_text() == (run / "history.csv").read_text()
    assert (out / "curves.png").is_file() and "curves.png" in text
