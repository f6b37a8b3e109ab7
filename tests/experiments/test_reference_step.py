"""experiments/reference_step.py: the authors' code's steps timed between the batches of its
training loader, their run.py unmodified (a stand-in here with their loop's shape: a
training loader, an evaluation loader, everything inside ``except Exception``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

RUN_PY = '''
import sys
import time

from torch.utils.data import DataLoader

if __name__ == "__main__":
    delay = float(sys.argv[sys.argv.index("-delay") + 1])
    try:  # as their Runner.fit: every Exception is caught and logged
        for epoch in range(2):
            for batch in DataLoader(list(range(60)), batch_size=10):
                time.sleep(delay)
            for batch in DataLoader(list(range(10)), batch_size=5):  # "evaluation"
                pass
    except Exception as e:
        print("caught", e)
'''


def _run(tmp_path, steps: int, delay: float):
    (tmp_path / "run.py").write_text(RUN_PY)
    return subprocess.run([sys.executable, str(REPO / "experiments" / "reference_step.py"),
                           "--steps", str(steps), "--", "-delay", str(delay)],
                          cwd=tmp_path, capture_output=True, text=True)


def test_steps_are_timed_between_training_batches_and_the_run_stops(tmp_path):
    res = _run(tmp_path, 3, 0.05)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["steps"]) == 3 and all(0.05 <= s < 0.5 for s in out["steps"])
    assert out["step_seconds"] == pytest.approx(sorted(out["steps"])[1], abs=1e-3)
    assert out["peak_rss_mb"] > 0
    assert "caught" not in res.stdout  # the stop is not an Exception their code swallows
    assert "batch 5 at" in res.stderr and "batch 6" not in res.stderr


def test_a_training_split_too_short_is_named(tmp_path):
    res = _run(tmp_path, 6, 0.0)  # 6 batches per epoch, 8 needed
    assert res.returncode != 0
    assert "the training split ran out after 6 batches; 8 are needed" in res.stderr
