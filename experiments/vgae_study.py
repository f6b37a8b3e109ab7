"""Which VGAE setting on Cora? Variants of the link task compared by their *validation*
AUC / AP over a few seeds (test figures printed alongside, not used to choose).

    python experiments/vgae_study.py --seeds 3 [--variants base select latent16 ...]

Each variant is ``run_vgae`` with the full reconstruction and the CLI's defaults
(lr 0.002, latent 32, 8 heads of 8, patience 100) except what its name changes:

* ``base``: the checkpoint with the best validation AUC;
* ``select``: the best validation AUC + AP (``--select auc+ap``);
* ``latent16``: ``select`` with a latent size of 16 (the VGAE paper's);
* ``lr005``: ``select`` with lr 0.005;
* ``sampled``: ``select`` with PyG's sampled reconstruction.

Prints one JSON line per (variant, seed) and a markdown table of means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from disenkg.datasets.planetoid import load_planetoid
from disenkg.training.node import run_vgae
from disenkg.training.node_config import VGAEConfig

VARIANTS = {
    "base": dict(select="auc"),
    "select": dict(select="auc+ap"),
    "latent16": dict(select="auc+ap", latent=16),
    "lr005": dict(select="auc+ap", lr=0.005),
    "sampled": dict(select="auc+ap", recon="sampled"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--first-seed", type=int, default=0, help="first seed")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load_planetoid("Cora", normalize_features=False)
    table = []
    for name in a.variants:
        v = dict(VARIANTS[name])
        cfg = VGAEConfig(epochs=1000, lr=v.pop("lr", 0.002), patience=100,
                         latent=v.pop("latent", 32), recon=v.get("recon", "full"),
                         select=v["select"])
        rows = []
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            t0 = time.perf_counter()
            r = run_vgae(data, cfg, seed=seed, device=torch.device("cpu"))
            r["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps({"variant": name, **r}), flush=True)
            rows.append(r)

        def mean(key: str, rows: list[dict] = rows) -> float:
            return 100 * statistics.fmean(r[key] for r in rows)

        table.append(f"| {name} | {len(rows)} | {mean('val_auc'):.2f} | {mean('val_ap'):.2f} | "
                     f"{mean('auc'):.2f} | {mean('ap'):.2f} |")
    print("| variant | seeds | valid AUC | valid AP | test AUC | test AP |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
