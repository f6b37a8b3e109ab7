"""Fingerprints of short training runs, to prove a refactor leaves results bit-identical.

Trains a few small configurations on UMLS through the CLI (one or two epochs each, the
conv heads on their chunked training path, float32 and bfloat16 heads, the evaluation
path) and prints, per configuration, the sha256 of the final parameters and of the
validation / test metrics. Run it on the code before and after a change and compare:

    python experiments/step_fingerprint.py --data-dir ../shared/data/kg > before.json
    # ... change the code ...
    python experiments/step_fingerprint.py --data-dir ../shared/data/kg > after.json
    diff before.json after.json

Identical digests mean identical float bits on this machine and torch build (nothing
here is a portable reference value).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

#: name -> CLI flags (UMLS, seed 0); each exercises a different head path
CONFIGS: dict[str, list[str]] = {
    "disenkgat-interacte-fp32": ["--model", "disenkgat", "--scorer", "interacte",
                                 "--epochs", "2", "--head-precision", "fp32"],
    "disenkgat-interacte-bf16": ["--model", "disenkgat", "--scorer", "interacte",
                                 "--epochs", "2", "--head-precision", "bf16",
                                 "--num-perm", "2"],
    "disenkgat-conve-fp32": ["--model", "disenkgat", "--scorer", "conve", "--epochs", "2",
                             "--head-precision", "fp32", "--image-chunk", "64"],
    "conve-fp32": ["--model", "conve", "--epochs", "2", "--head-precision", "fp32",
                   "--image-chunk", "48"],
    "conve-bf16": ["--model", "conve", "--epochs", "2", "--head-precision", "bf16",
                   "--image-chunk", "48"],
}


def _digest(run: Path) -> dict[str, str]:
    ck = torch.load(run / "last.pt", weights_only=True, map_location="cpu")
    h = hashlib.sha256()
    for name, t in sorted(ck["model"].items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    metrics = json.loads((run / "metrics.json").read_text())
    scores = {k: v for k, v in metrics.items() if k in ("valid", "test")}
    m = hashlib.sha256(json.dumps(scores, sort_keys=True).encode()).hexdigest()
    return {"parameters": h.hexdigest()[:16], "metrics": m[:16],
            "losses": [row["loss"] for row in ck["history"]]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="directory with umls.tar.gz")
    p.add_argument("--only", nargs="*", default=None, choices=list(CONFIGS),
                   help="configurations to run (default: all)")
    a = p.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only or CONFIGS:
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "disenkg.run", "link", "--dataset", "umls",
                   "--output-dir", str(run), "--no-progress", "--log-level", "WARNING",
                   "--seed", "0", *CONFIGS[name]]
            if a.data_dir:
                cmd += ["--data-dir", a.data_dir]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            out[name] = _digest(run)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
