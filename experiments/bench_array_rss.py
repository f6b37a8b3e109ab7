"""Peak RSS of a short array-task training run on a synthetic file and one 8x larger.

Generates (once, into --dir) synthetic ``(G, S, T, N, F)`` float32 arrays with a planted
graph signal, ``(7, 1358, 12, 307, 2)`` (~280 MB) and the same with 8x the samples
(~2.2 GB), then runs ``python -m disenkg.run node --task array`` on each with the same
``--max-samples`` in a fresh process and prints its peak RSS (VmHWM) and metrics.

    python experiments/bench_array_rss.py [--dir /tmp/disenkg-arrays] [--max-samples 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
from disenkg.cli.node import main
m = main(sys.argv[1:])
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"peak_rss_mb": int(hwm) / 1024, "test_mse": m["test_mse_mean"],
                  "baseline_mse": m["baseline"]["test_mse_mean"], "seconds": m["seconds"]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/disenkg-arrays", help="where the arrays go")
    p.add_argument("--max-samples", type=int, default=2000, help="samples drawn per run")
    p.add_argument("--epochs", type=int, default=3, help="training epochs")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 8],
                   help="sample-axis multipliers of the base shape")
    a = p.parse_args()
    from disenkg.datasets.arrays import make_synthetic

    print(f"{'shape':>28} {'file MB':>9} {'peak RSS MB':>12} {'MSE':>8} {'no-graph MSE':>13}")
    for scale in a.scales:
        shape = (7, 1358 * scale, 12, 307, 2)
        d = Path(a.dir) / f"x{scale}"
        if not (d / "targets.npy").exists():
            make_synthetic(d, shape=shape)
        cmd = [sys.executable, "-c", CHILD, "--task", "array", "--features",
               str(d / "features.npy"), "--edges", str(d / "edges.npy"), "--targets",
               str(d / "targets.npy"), "--max-samples", str(a.max_samples), "--epochs",
               str(a.epochs), "--seeds", "1", "--no-progress", "--output-dir", str(d / "run"),
               "--overwrite",
               "--log-level", "WARNING"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mb = (d / "features.npy").stat().st_size / 2**20
        print(f"{str(shape):>28} {mb:>9.0f} {r['peak_rss_mb']:>12.0f} {r['test_mse']:>8.4f} "
              f"{r['baseline_mse']:>13.4f}", flush=True)


if __name__ == "__main__":
    main()
