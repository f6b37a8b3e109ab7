"""The halo exchange of a receiver-partitioned graph (:mod:`disenkg.utils.halo`): 3 gloo
ranks with uneven shards give each rank exactly its edges' sender rows, and the gradients
summed back to the owners equal the whole graph's (float64), with and without the tanh
written into the table."""

from __future__ import annotations

from pathlib import Path

import torch

from disenkg.utils.entity_shards import EntityShard
from disenkg.utils.halo import Halo
from tests.training.gloo import gloo_group, spawn_ranks

N, E = 13, 60


def _graph():
    g = torch.Generator().manual_seed(3)
    src = torch.randint(0, N - 1, (E,), generator=g)  # entity N - 1 sends nothing
    dst = torch.randint(0, N, (E,), generator=g)
    rel = torch.randint(0, 5, (E,), generator=g)
    x = torch.randn(N, 2, 3, generator=g, dtype=torch.float64)
    c = torch.randn(E, 2, 3, generator=g, dtype=torch.float64)  # a weight per edge
    bounds = [0, 2, 9, N]  # uneven shards
    return src, dst, rel, x, c, bounds


def _worker(rank, world, init_file, out):
    with gloo_group(rank, world, init_file):
        src, dst, rel, x, c, bounds = _graph()
        shard = EntityShard(rank=rank, num_shards=world, num_entities=N, bounds=tuple(bounds))
        halo = Halo.build(shard, torch.stack([src, dst]), rel)
        local = x[shard.lo:shard.hi].clone().requires_grad_()
        table = halo.extend(local)
        mine = (dst >= shard.lo) & (dst < shard.hi)
        # the local numbering reads the same rows as the global ids
        torch.testing.assert_close(table.index_select(0, halo.edge_index[0]),
                                   x.index_select(0, src[mine]), rtol=0, atol=0)
        assert torch.equal(halo.edge_index[1] + shard.lo, dst[mine])
        assert torch.equal(halo.edge_type, rel[mine])
        assert torch.equal(table[:shard.size], local.detach())
        outside = (halo.ids < shard.lo) | (halo.ids >= shard.hi)
        assert bool(outside.all()) and halo.size == int(torch.unique(
            src[mine][(src[mine] < shard.lo) | (src[mine] >= shard.hi)]).numel())
        (table.index_select(0, halo.edge_index[0]) * c[mine]).sum().backward()
        # the activated table: tanh of every row, written once, differentiated through
        z = x[shard.lo:shard.hi].clone().requires_grad_()
        act = halo.extend(z, tanh=True)
        torch.testing.assert_close(act.index_select(0, halo.edge_index[0]),
                                   torch.tanh(x).index_select(0, src[mine]))
        (act.index_select(0, halo.edge_index[0]) * c[mine]).sum().backward()
        torch.save({"grad": local.grad, "tanh_grad": z.grad, "lo": shard.lo, "H": halo.size,
                    "sent": halo.rows_sent}, Path(out) / f"halo{rank}.pt")


def test_halo_rows_and_gradients_equal_the_whole_graph(tmp_path):
    spawn_ranks(_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3)
    src, dst, rel, x, c, bounds = _graph()
    want = torch.zeros_like(x).index_add_(0, src, c)
    got = [torch.load(tmp_path / f"halo{r}.pt", weights_only=True) for r in range(3)]
    assert [g["lo"] for g in got] == bounds[:-1]
    torch.testing.assert_close(torch.cat([g["grad"] for g in got]), want, rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(torch.cat([g["tanh_grad"] for g in got]),
                               want * (1 - torch.tanh(x) ** 2), rtol=1e-12, atol=1e-15)
    assert sum(g["H"] for g in got) == sum(g["sent"] for g in got) > 0
