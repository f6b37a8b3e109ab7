"""Times training steps of the authors' DisenKGAT code as it stands: their ``run.py`` runs as
``__main__`` with the arguments given after ``--``, unmodified; the only instrument is the
training ``DataLoader``'s iterator, which notes the time of every batch it hands out and
stops the run after ``--steps`` + 1 steps (the first is a warm-up).

One step is the time between two batches: their whole loop body (forward, loss with the
CLUB penalty, backward, optimiser step, the estimator's fit on a fresh encoder pass) and
their loader's next batch, i.e. what one step costs in their training loop. Run from a
prepared copy of their repository (``bench_train_step.py --reference`` does that):

    cd REFERENCE && python .../reference_step.py --steps 3 -- -data FB15k-237 -gpu -1 \\
        -num_workers 0 -mi_train -mi_drop

Prints one JSON line: ``step_seconds`` (median), ``steps`` (every timed step),
``peak_rss_mb`` (the process's VmHWM), ``threads``.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import sys
import time

from benchlib import status_mb  # experiments/ is on sys.path: this script's folder


class _Enough(BaseException):
    """Raised from the training loader once every step is timed (a ``BaseException``:
    their ``fit`` catches every ``Exception`` and logs it at DEBUG)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then run.py's arguments")
    a = p.parse_args()
    their = a.args[1:] if a.args[:1] == ["--"] else a.args

    import torch
    from torch.utils.data import DataLoader

    marks: list[float] = []
    original = DataLoader.__iter__

    def timed_iter(self):
        if marks:  # only the first loader iterated (fit's training epoch) is timed
            yield from original(self)
            return
        for batch in original(self):
            marks.append(time.perf_counter())
            print(f"reference: batch {len(marks)} at {marks[-1] - marks[0]:.2f} s, peak "
                  f"RSS {status_mb('VmHWM'):.0f} MB", file=sys.stderr, flush=True)
            if len(marks) > a.steps + 1:
                raise _Enough
            yield batch
        raise SystemExit(f"the training split ran out after {len(marks)} batches; "
                         f"{a.steps + 2} are needed (fewer --steps or a smaller -batch)")

    DataLoader.__iter__ = timed_iter
    sys.argv = ["run.py", *their]
    try:
        runpy.run_path("run.py", run_name="__main__")
    except _Enough:
        pass
    else:
        raise SystemExit("run.py finished without iterating its training loader")
    steps = [b - a_ for a_, b in zip(marks[1:], marks[2:])]  # the first step: warm-up
    print(json.dumps({"step_seconds": statistics.median(steps),
                      "steps": [round(s, 3) for s in steps],
                      "peak_rss_mb": round(status_mb("VmHWM"), 1),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
