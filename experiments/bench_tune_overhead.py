"""Per-trial overhead of ``tune`` (issue 34): a trial against the same configuration trained
alone, side by side in one process.

Alternates, ``--pairs`` times: (a) ``disenkg.train`` of one configuration (a fresh run
directory each time: data loading, training, validation, test evaluation) and (b)
``disenkg.tune`` of a one-trial study whose search space is empty, so its trial trains exactly
that configuration (a fresh study each time: storage, data loading once, the trial, the test
evaluation of the best trial and the report). Prints each pair's wall times, the trial's own
duration as Optuna recorded it, and the ratios (b / a), then their medians, as JSON.

    python experiments/bench_tune_overhead.py --dataset kinship --epochs 10 [--pairs 3]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import dataset_parser  # noqa: E402


def main() -> None:
    p = dataset_parser(__doc__)
    p.set_defaults(dataset="kinship")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args()

    import disenkg
    from disenkg.hpo.space import default_space
    from disenkg.pipeline.config import LinkConfig

    common = dict(dataset=args.dataset, epochs=args.epochs, no_progress=True,
                  log_level="WARNING")
    if args.data_dir:
        common["data_dir"] = args.data_dir
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = default_space(LinkConfig.resolve([]))
        empty = root / "space.toml"  # every searchable setting left at the configuration's
        empty.write_text("".join(f"{k} = false\n" for k in names))
        rows = []
        for i in range(args.pairs):
            t = time.perf_counter()
            disenkg.train(output_dir=str(root / f"plain{i}"), **common)
            plain = time.perf_counter() - t
            t = time.perf_counter()
            result = disenkg.tune(output_dir=str(root / f"study{i}"), trials=1,
                                  space=str(empty), **common)
            study = time.perf_counter() - t
            trial = result.study.trials[0]
            trial_s = (trial.datetime_complete - trial.datetime_start).total_seconds()
            rows.append({"plain_s": round(plain, 2), "study_s": round(study, 2),
                         "trial_s": round(trial_s, 2), "study_ratio": round(study / plain, 3),
                         "trial_ratio": round(trial_s / plain, 3)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"dataset": args.dataset, "epochs": args.epochs, "pairs": len(rows),
                      "median_study_ratio": statistics.median(r["study_ratio"] for r in rows),
                      "median_trial_ratio": statistics.median(r["trial_ratio"] for r in rows)}))


if __name__ == "__main__":
    main()
