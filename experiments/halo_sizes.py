"""Halo sizes of DisenKGAT's receiver-partitioned encoder, computed from a graph alone.

For each shard count ``S`` and partition (``range``: equal id ranges; ``degree``: equal
edges received, :func:`~disenkg.utils.entity_shards.balanced_bounds`), every shard's own
entities, the edges ending at them (self loops not counted) and its halo (the distinct
sender rows it receives from other shards per layer and pass), from
:meth:`Halo.plan <disenkg.utils.halo.Halo.plan>`: the code a sharded run uses, without the
processes. ``expected_halo`` is the closed form for ids unrelated to the graph's
structure, from the out-degrees :math:`d_n` alone: a row is needed by each other shard
that one of its :math:`d_n` edges lands in,

.. math::
    \\bar H = \\frac1S \\sum_n (S - 1)\\Big(1 - \\big(1 - \\tfrac1S\\big)^{d_n}\\Big),

which the paper estimates in README use for the KGs not at hand. Prints one JSON line
(``--out``: indented).

    python experiments/halo_sizes.py --dataset FB15k-237 --data-dir ../shared/data/kg
    python experiments/halo_sizes.py --synthetic --entities 500000 --triples 1000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from bench_distributed import synthetic_kg
from benchlib import dataset_parser, emit


def _parser() -> argparse.ArgumentParser:
    p = dataset_parser(__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", action="store_true",
                   help="bench_distributed.py's synthetic KG instead of --dataset")
    p.add_argument("--entities", type=int, default=500_000)
    p.add_argument("--relations", type=int, default=200)
    p.add_argument("--triples", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def expected_halo(out_degree: torch.Tensor, shards: int) -> float:
    """The mean halo rows per shard for ids unrelated to the graph (module docstring)."""
    d = out_degree.double()
    return float(((shards - 1) * (1 - (1 - 1 / shards) ** d)).sum() / shards)


def halo_table(message_index: torch.Tensor, edge_type: torch.Tensor, num_entities: int,
               shards: int, partition: str) -> dict:
    """Every shard's entities, local edges and halo rows for one partition."""
    from disenkg.utils.entity_shards import EntityShard, balanced_bounds
    from disenkg.utils.halo import Halo

    bounds = None
    if partition == "degree":
        loads = torch.bincount(message_index[1], minlength=num_entities) + 1
        bounds = tuple(balanced_bounds(loads, shards))
    rows = []
    for s in range(shards):
        shard = EntityShard(rank=s, num_shards=shards, num_entities=num_entities,
                            bounds=bounds)
        local, _, ids, _ = Halo.plan(shard, message_index, edge_type)
        rows.append({"entities": shard.size, "edges": int(local.shape[1]),
                     "halo": int(ids.numel())})
    mean = {k: sum(r[k] for r in rows) / shards for k in ("entities", "edges", "halo")}
    return {"shards": rows,
            "max_halo": max(r["halo"] for r in rows),
            "mean_halo": round(mean["halo"], 1),
            "halo_over_entities": round(mean["halo"] / num_entities, 4),
            "edge_imbalance": round(max(r["edges"] for r in rows) / max(mean["edges"], 1), 3),
            "rows_held_over_n": round(max(r["entities"] + r["halo"] for r in rows)
                                      / num_entities, 4)}


def main(argv: list[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    if a.synthetic:
        ds = synthetic_kg(a)
    else:
        from disenkg.datasets import KGDataset

        path = Path(a.data_dir) / f"{a.dataset}.tar.gz" if a.data_dir else a.dataset
        ds = KGDataset.load(path)
    ei, et = ds.graph()
    message = ei.flip(0)  # DisenKGAT's messages run tail -> head (see DisenKGAT)
    out_degree = torch.bincount(message[0], minlength=ds.num_entities)
    res = {"dataset": ds.name, "entities": ds.num_entities, "edges": int(et.numel()),
           "mean_out_degree": round(float(out_degree.double().mean()), 2), "layouts": {}}
    for S in a.shards:
        res["layouts"][str(S)] = {p: halo_table(message, et, ds.num_entities, S, p)
                                  for p in ("range", "degree")}
        res["layouts"][str(S)]["expected_halo"] = round(expected_halo(out_degree, S), 1)
    return emit(res, a.out)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
