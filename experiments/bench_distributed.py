"""Peak memory per rank and step time of entity-sharded training against one process.

Builds a synthetic KG in memory (``--entities`` entities, ``--relations`` relations,
``--triples`` training triples with heads and tails drawn from a Zipf-like law, seeded), then
runs ``--steps`` real training steps of :class:`~disenkg.training.LinkTrainer` in fresh
processes for each layout:

* ``single``: one process (the baseline, run in the same invocation);
* ``sharded`` (``sharded-S`` for each further count): ``--shards S`` processes (gloo on
  this CPU), ``--entity-shards`` = that, the ids cut by ``--partition``;
* ``data_parallel`` (with ``--data-parallel``): the same processes splitting the batch.

DisenKGAT's encoder runs partitioned by receiver; each of its ranks also reports its halo
(``halo_rows``: sender rows received per layer and pass; ``local_edges``; and
``halo_mb_per_step``: the MB it receives per step through the exchange, forward rows,
with ``--halo-recompute`` (the default, as a run's) the rows again in backward, and the
backward gradients, counted at the exchange itself), which :mod:`disenkg.utils.halo`
describes.

Each process reports its resident memory after the dataset and model are built but
before the trainer exists (``base_mb``: Python, torch, the dataset and its indices, the
unsharded model), after the trainer is built (``ready_mb``: sharded, the model holds
its rows only), its peak resident memory after the steps (``peak_mb``, VmHWM) and the
median step time. The ratio of interest is the per-rank peak of ``sharded`` against
``single``; ``train_mb = peak_mb - import_mb`` removes the interpreter and torch's own
footprint (measured right after ``import torch``), which no layout can shard;
``floor_mb`` adds ``torch._dynamo``, which ``torch.optim`` imports when an optimiser gets
its first parameter group (about 150 MB), and ``*_above_floor_ratio`` compares the peaks
above that floor. The
processes share the machine's cores (``torch.set_num_threads(cores // processes)``), so
step times compare layouts at equal total compute. Prints one JSON object.

    python experiments/bench_distributed.py --model conve --entities 500000 --steps 4
    python experiments/bench_distributed.py --model conve --dim 400   # a 20 x 20 ConvE image
    python experiments/bench_distributed.py --model disenkgat --components 3 --dim 64 \
        --shards 2 4 --steps 2

The ratio depends on the width: what no layout shards (interpreter, torch, dataset, the
conv and fc layers, fixed-size temporaries) is a fixed cost per process, so the per-rank
ratio falls as the table grows (README: 0.631x at D = 200, 0.582x at D = 400).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_name, status_mb


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="conve", choices=["conve", "disenkgat"])
    p.add_argument("--entities", type=int, default=500_000)
    p.add_argument("--relations", type=int, default=200)
    p.add_argument("--triples", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=200,
                   help="ConvE's embedding size; DisenKGAT's channels F per component")
    p.add_argument("--components", type=int, default=2, help="DisenKGAT's K")
    p.add_argument("--init-dim", type=int, default=100, help="DisenKGAT's base embedding size")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up)")
    p.add_argument("--shards", type=int, nargs="+", default=[2],
                   help="process counts of the sharded layout (one run each)")
    p.add_argument("--partition", default="range", choices=["range", "degree"],
                   help="how the entity ids are cut (--partition of a run)")
    p.add_argument("--halo-recompute", action=argparse.BooleanOptionalAction, default=True,
                   help="DisenKGAT sharded: exchange the halo rows again in backward "
                        "(--halo-recompute of a run) or hold them")
    p.add_argument("--data-parallel", action="store_true",
                   help="also run the data-parallel layout with the same processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def synthetic_kg(a: argparse.Namespace):
    """A KGDataset in memory: Zipf-like entity popularity, uniform relations, seeded."""
    import torch

    from disenkg.datasets import KGDataset

    g = torch.Generator().manual_seed(a.seed)
    weights = 1.0 / torch.arange(1, a.entities + 1, dtype=torch.float64) ** 0.7
    n = a.triples + 2 * 2000

    def draw():
        perm = torch.randperm(a.entities, generator=g)  # popularity not tied to the id
        return perm[torch.multinomial(weights, n, replacement=True, generator=g)]

    h, t = draw(), draw()
    r = torch.randint(0, a.relations, (n,), generator=g)
    triples = torch.unique(torch.stack([h, r, t], 1), dim=0)
    triples = triples[torch.randperm(len(triples), generator=g)]
    train, valid, test = triples[:-4000], triples[-4000:-2000], triples[-2000:]
    return KGDataset("synthetic", [f"e{i}" for i in range(a.entities)],
                     [f"r{i}" for i in range(a.relations)], train, valid, test)


def build_model(a: argparse.Namespace, ds):
    from disenkg.models import ConvE

    if a.model == "conve":  # (no PyTorch Geometric import: see disenkg.nn)
        return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                     embedding_dim=a.dim, k_h=20, k_w=a.dim // 20)
    from disenkg.models import DisenKGAT
    from disenkg.nn.scorers import DistMultScorer

    ei, et = ds.graph()
    return DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                     edge_index=ei, edge_type=et, num_components=a.components,
                     init_dim=a.init_dim, channels=a.dim, scorer=DistMultScorer())


def worker(rank: int, world: int, layout: str, a: argparse.Namespace, out: str) -> None:
    import torch

    import_mb = status_mb("VmRSS")
    import torch._dynamo  # noqa: F401 - torch.optim imports it on its first parameter group

    floor_mb = status_mb("VmRSS")
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // world))
    ctx = None
    if world > 1:
        import torch.distributed as dist

        from disenkg.training.distributed import DistContext

        dist.init_process_group("gloo", init_method=f"file://{out}/init-{layout}",
                                rank=rank, world_size=world)
        ctx = DistContext(rank=rank, world_size=world)
    from disenkg.training import LinkTrainer, TrainConfig
    from disenkg.utils import seed_everything

    seed_everything(a.seed)
    ds = synthetic_kg(a)
    model = build_model(a, ds)
    base_mb = status_mb("VmRSS")
    shards = world if layout.startswith("sharded") else 1
    cfg = TrainConfig(epochs=1, batch_size=a.batch_size, lr=1e-3, progress=False,
                      seed=a.seed, entity_shards=shards, partition=a.partition,
                      halo_recompute=a.halo_recompute)
    tr = LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=Path(out) / layout,
                     dist=ctx)
    ready_mb = status_mb("VmRSS")
    traffic = _count_halo_traffic()
    ids = torch.randperm(len(tr.train_index), generator=torch.Generator().manual_seed(1))
    times, losses = [], []
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        losses.append(tr.train_step(ids[i * a.batch_size:(i + 1) * a.batch_size]))
        if i:
            times.append(time.perf_counter() - t0)
    res = {"rank": rank, "import_mb": round(import_mb, 1), "floor_mb": round(floor_mb, 1),
           "base_mb": round(base_mb, 1),
           "ready_mb": round(ready_mb, 1),
           "peak_mb": round(status_mb("VmHWM"), 1),
           "train_mb": round(status_mb("VmHWM") - import_mb, 1),
           "step_seconds": round(statistics.median(times), 3), "losses": losses,
           "parameters_here": sum(p.numel() for p in model.parameters())}
    halo = getattr(model, "halo", None)
    if halo is not None:
        res.update(entities_here=halo.shard.size, local_edges=int(halo.edge_type.numel()),
                   halo_rows=halo.size, rows_sent=halo.rows_sent,
                   halo_mb_per_step=round(traffic["bytes"] / (a.steps + 1) / 2**20, 1))
    Path(out, f"{layout}-{rank}.json").write_text(json.dumps(res))
    if world > 1:
        torch.distributed.destroy_process_group()


def _count_halo_traffic() -> dict:
    """Counts the bytes each halo exchange receives (rows forward, again in backward with
    ``--halo-recompute``, their gradients back), by wrapping the one exchange function of
    :mod:`disenkg.utils.halo`."""
    from disenkg.utils import halo as mod

    traffic = {"bytes": 0}
    exchange = mod._exchange

    def counted(out, *args):
        traffic["bytes"] += out.numel() * out.element_size()
        return exchange(out, *args)

    mod._exchange = counted
    return traffic


def run_layout(layout: str, world: int, a: argparse.Namespace, out: str) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, layout, a, out), nprocs=world, join=True)
    return [json.loads(Path(out, f"{layout}-{r}.json").read_text()) for r in range(world)]


def main(argv: list[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        layouts = {"single": run_layout("single", 1, a, out)}
        for i, world in enumerate(a.shards):
            name = "sharded" if i == 0 else f"sharded-{world}"
            layouts[name] = run_layout(name, world, a, out)
        if a.data_parallel:
            layouts["data_parallel"] = run_layout("data_parallel", a.shards[0], a, out)
    one = layouts["single"][0]
    res = {"model": a.model, "entities": a.entities, "triples": a.triples, "dim": a.dim,
           "components": a.components if a.model == "disenkgat" else 1,
           "batch_size": a.batch_size, "processes": a.shards, "partition": a.partition,
           "halo_recompute": a.halo_recompute,
           "cpu": cpu_name(), "cpu_count": os.cpu_count(), "layouts": layouts}
    for name, ranks in layouts.items():
        if name == "single":
            continue
        res[f"{name}_peak_ratio"] = round(max(r["peak_mb"] for r in ranks) / one["peak_mb"], 3)
        res[f"{name}_train_mb_ratio"] = round(max(r["train_mb"] for r in ranks)
                                              / one["train_mb"], 3)
        res[f"{name}_above_floor_ratio"] = round(
            max(r["peak_mb"] - r["floor_mb"] for r in ranks) / (one["peak_mb"] - one["floor_mb"]),
            3)
        res[f"{name}_step_ratio"] = round(max(r["step_seconds"] for r in ranks)
                                          / one["step_seconds"], 3)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
