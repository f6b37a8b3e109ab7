"""Small KGs that no preset knows, cut from public benchmarks: "a user's own KG" for
``experiments/defaults_study.py``.

* ``fb15k237-top400``: the 400 entities of FB15k-237 with the most triples (over all
  splits) and every triple among them; dense, 147 relations.
* ``wn18rr-top2000``: the same with the 2000 most connected WN18RR entities; sparse, 10
  relations, hierarchical.
* ``kinship-top40`` and ``umls-top40``: the 40 most connected entities of Kinship and UMLS
  and every triple among them: tiny KGs (under 50 entities, about a thousand training
  triples), the scale where one training run costs a small part of the time budget.

Each triple keeps the split it has in the source benchmark; valid / test triples whose
entities or relation do not occur in the subgraph's train split are dropped, so the splits
are transductive. Sources: ``../shared/data/kg/{FB15k-237,WN18RR,kinship,umls}.tar.gz``
(sha256 in ``../shared/data/README.md``; FB15k-237: Toutanova & Chen 2015, WN18RR: Dettmers
et al. 2018; Kinship and UMLS: Kok & Domingos 2007, the splits of Dettmers et al. 2018).
Deterministic: ties in the degree order break by entity name.

    python experiments/make_user_kgs.py --data-dir ../shared/data/kg --out runs/user_kgs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from disenkg.datasets import KGDataset

CUTS = {"fb15k237-top400": ("FB15k-237", 400), "wn18rr-top2000": ("WN18RR", 2000),
        "kinship-top40": ("kinship", 40), "umls-top40": ("umls", 40)}


def cut(ds: KGDataset, k: int) -> dict[str, list[tuple[str, str, str]]]:
    allt = torch.cat([ds.train, ds.valid, ds.test])
    deg = torch.bincount(torch.cat([allt[:, 0], allt[:, 2]]), minlength=ds.num_entities)
    order = sorted(range(ds.num_entities), key=lambda i: (-int(deg[i]), ds.entities[i]))
    keep = torch.zeros(ds.num_entities, dtype=torch.bool)
    keep[order[:k]] = True
    out = {}
    for split in ("train", "valid", "test"):
        x = getattr(ds, split)
        x = x[keep[x[:, 0]] & keep[x[:, 2]]]
        if split == "train":
            ents = set(x[:, 0].tolist()) | set(x[:, 2].tolist())
            rels = set(x[:, 1].tolist())
        else:
            x = x[[h in ents and t in ents and r in rels for h, r, t in x.tolist()]]
        out[split] = [(ds.entities[h], ds.relations[r], ds.entities[t]) for h, r, t in
                      x.tolist()]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/kg", help="folder of the archives")
    p.add_argument("--out", default="runs/user_kgs", help="where the KG folders go")
    a = p.parse_args()
    for name, (source, k) in CUTS.items():
        ds = KGDataset.load(source, data_dir=a.data_dir)
        splits = cut(ds, k)
        d = Path(a.out) / name
        d.mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            (d / f"{split}.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
        print(name, {s: len(v) for s, v in splits.items()}, d)


if __name__ == "__main__":
    main()
