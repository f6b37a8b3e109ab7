"""DisenKGAT against the authors' code on UMLS: the same settings, seeds and epochs, per-epoch
validation MRR and final test metrics of both, and the time per epoch of each.

    python experiments/compare_reference.py PATH/TO/DisenKGAT --epochs 100 --seeds 0 1 2 \\
        [--data-dir ../shared/data/kg] [--out experiments/results/reference_umls.md]

PATH is a checkout of the authors' repository (junkangwu/DisenKGAT), kept outside this
project (their code also needs ``ordered-set``: ``pip install --target DIR ordered-set``
and ``--reference-pythonpath DIR``); it is copied into a scratch directory, where two small
patches let it run on a CPU with current NumPy (``np.bool`` -> ``bool``; ``import
traceback`` in ``helper.py``), and UMLS's split files are written into its
``data/umls/``. Their command is the README's
overall best (``-mi_train -mi_drop``: InteractE, cross, K = 3, CLUB) at batch 128 with
``-gpu -1 -num_workers 0``; this package runs ``experiments/configs/fb15k237_best.toml``
(the same settings) on UMLS at batch 128. Both validate every epoch; their logs are read
with :mod:`parse_authors_logs`. The script writes the Markdown table and, with matplotlib,
``reference_umls.png`` beside it, and prints one JSON line with everything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from parse_authors_logs import parse_log

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")


def prepare_reference(checkout: Path, scratch: Path, archive: Path, name: str = "umls") -> Path:
    """A patched copy of the authors' code with the KG of ``archive`` in ``data/NAME``
    (returns its path)."""
    if not (checkout / "run.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of the authors' DisenKGAT (no run.py)")
    ref = scratch / "reference"
    shutil.copytree(checkout, ref, ignore=shutil.ignore_patterns(".git", "log", "checkpoints"))
    for py in ref.glob("*.py"):
        text = py.read_text()
        patched = text.replace("dtype=np.bool)", "dtype=bool)")
        if py.name == "helper.py" and "import traceback" not in patched:
            patched = "import traceback\n" + patched
        if patched != text:
            py.write_text(patched)
    (ref / "log").mkdir()
    (ref / "checkpoints").mkdir()
    out = ref / "data" / name
    out.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = {Path(m.name).stem: m for m in tar.getmembers()
                   if m.isfile() and Path(m.name).name in {f"{s}.txt" for s in SPLITS}}
        for split in SPLITS:
            if split not in members:
                raise SystemExit(f"{archive}: no {split}.txt inside")
            data = tar.extractfile(members[split]).read()
            (out / f"{split}.txt").write_bytes(data)
    return ref


def run_reference(ref: Path, seed: int, epochs: int, extra_path: str | None) -> dict:
    name = f"cmp_umls_s{seed}"
    cmd = [sys.executable, "run.py", "-name", name, "-data", "umls", "-gpu", "-1",
           "-num_workers", "0", "-seed", str(seed), "-epoch", str(epochs), "-batch", "128",
           "-test_batch", "128", "-mi_train", "-mi_drop"]
    env = dict(os.environ)
    if extra_path:  # their extra dependency (ordered-set), installed outside this project
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ref, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"the reference run failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    logs = sorted((ref / "log").glob(f"{name}*"))
    if not logs:
        raise SystemExit(f"the reference run wrote no log {name}* in {ref / 'log'}")
    valid, test = parse_log(logs[-1])
    return {"seconds": seconds, "curve": [r["valid_mrr"] for r in valid],
            "test": test[-1] if test else None}


def run_package(seed: int, epochs: int, out: Path, data: str) -> dict:
    cmd = [sys.executable, "-m", "disenkg.run", "--config",
           str(REPO / "experiments" / "configs" / "fb15k237_best.toml"), "--dataset", data,
           "--preset", "none",  # the authors' InteractE defaults, not a UMLS preset:
           "--k-h", "20", "--k-w", "10", "--num-filters", "200", "--kernel-size", "9",
           "--feature-dropout", "0.4", "--hidden-dropout", "0.3", "--batch-size", "128",
           "--epochs", str(epochs), "--patience", "0",
           "--eval-every", "1", "--seed", str(seed), "--output-dir", str(out),
           "--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    with open(out / "history.csv") as fh:
        curve = [float(r["valid_mrr"]) for r in csv.DictReader(fh)]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "curve": curve, "test": metrics["test"],
            "train_seconds": metrics["train_seconds"]}


def _mean_std(xs: list[float]) -> str:
    return (f"{statistics.fmean(xs):.4f} +- {statistics.stdev(xs):.4f}" if len(xs) > 1
            else f"{xs[0]:.4f}")


def write_report(res: dict, epochs: int, path: Path) -> None:
    seeds = sorted(res["package"])
    lines = ["# DisenKGAT on UMLS: this package against the authors' code", "",
             f"`python experiments/compare_reference.py PATH/TO/DisenKGAT --epochs {epochs} "
             f"--seeds {' '.join(map(str, seeds))}` (this CPU, one run at a time).", "",
             "| code | seed | test MRR | test Hits@1 | test Hits@10 | best valid MRR | "
             "seconds per epoch |", "|---|---|---|---|---|---|---|"]
    for code in ("package", "reference"):
        for s in seeds:
            r = res[code][s]
            t = r["test"] or {}
            mrr = t.get("mrr", t.get("test_mrr_avg"))
            h1 = t.get("hits@1", t.get("test_hits@1_avg"))
            h10 = t.get("hits@10", t.get("test_hits@10_avg"))
            lines.append(f"| {code} | {s} | {mrr:.4f} | {h1:.4f} | {h10:.4f} | "
                         f"{max(r['curve']):.4f} | {r['seconds'] / epochs:.2f} |")
    step = max(1, epochs // 10)
    lines += ["", f"Validation MRR every {step} epoch(s) (mean over seeds):", "",
              "| epoch | package | reference |", "|---|---|---|"]
    for e in range(0, epochs, step):
        row = [statistics.fmean(res[c][s]["curve"][e] for s in seeds
                                if len(res[c][s]["curve"]) > e) for c in ("package", "reference")]
        lines.append(f"| {e + 1} | {row[0]:.4f} | {row[1]:.4f} |")
    path.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for code, style in (("package", "-"), ("reference", "--")):
        for s in seeds:
            c = res[code][s]["curve"]
            ax.plot(range(1, len(c) + 1), c, style, label=f"{code} seed {s}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MRR")
    ax.set_title("UMLS, DisenKGAT: package vs authors' code")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkout", type=Path, help="the authors' repository checkout")
    p.add_argument("--epochs", type=int, default=100, help="epochs of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "kg",
                   help="folder holding umls.tar.gz")
    p.add_argument("--reference-pythonpath", default=None,
                   help="a folder with the authors' extra dependency (ordered-set), e.g. from "
                        "pip install --target DIR ordered-set")
    p.add_argument("--out", type=Path,
                   default=REPO / "experiments" / "results" / "reference_umls.md")
    a = p.parse_args()
    archive = a.data_dir / "umls.tar.gz"
    if not archive.is_file():
        raise SystemExit(f"{archive} does not exist")
    res: dict = {"package": {}, "reference": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ref = prepare_reference(a.checkout, Path(tmp), archive)
        for s in a.seeds:
            res["package"][s] = run_package(s, a.epochs, Path(tmp) / f"pkg{s}", str(archive))
            res["reference"][s] = run_reference(ref, s, a.epochs, a.reference_pythonpath)
            print(json.dumps({"seed": s, "package_test": res["package"][s]["test"]["mrr"],
                              "reference_test": res["reference"][s]["test"]}), flush=True)
    write_report(res, a.epochs, a.out)
    summary = {c: _mean_std([(r["test"] or {}).get("mrr", (r["test"] or {}).get(
        "test_mrr_avg", float("nan"))) for r in res[c].values()]) for c in res}
    print(json.dumps({"test_mrr": summary, "report": str(a.out)}))


if __name__ == "__main__":
    main()
