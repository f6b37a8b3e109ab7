"""The halo exchange of a receiver-partitioned graph (:mod:`disenkg.utils.halo`): 3 gloo
ranks with uneven shards give each rank exactly its edges' sender rows, and the gradients
summed back to the owners equal the whole graph's (float64), with and without the tanh
written into the table, and with the halo rows exchanged again in backward
(:meth:`Halo.extended`): the same gradients, and what the graph saves of the table is a
reference in its place (a view's shape and place), not the table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from disenkg.utils import halo as halo_module
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


def _worker(rank, world, init_file, out, exchange_bytes):
    if exchange_bytes is not None:
        halo_module.EXCHANGE_BYTES = exchange_bytes
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
        # a layer that saves (a view of) its table: the rows again in backward, or held
        got = {}
        packed = []  # what the graph keeps of the table instead of the table itself

        class CountedView(halo_module._TableView):
            def __init__(self, *args):
                super().__init__(*args)
                packed.append(self.shape)

        halo_module._TableView = CountedView
        for tanh in (False, True):
            for recompute in (False, True):
                h = Halo(**{**halo.__dict__, "recompute": recompute})
                v = x[shard.lo:shard.hi].clone().requires_grad_()
                packed.clear()
                with h.extended(v * 1.0, tanh=tanh) as tab:  # (as the model's: not a leaf)
                    y = (_layer(tab).index_select(0, h.edge_index[0]) * c[mine, 0, 0]).sum()
                # held: the layer saved the table's view; recomputed: a reference in its place
                assert packed == ([(tab.shape[0], 1, 3)] if recompute else []), (packed, tab.shape)
                del tab
                y.backward()
                got[f"layer_grad_{int(tanh)}{int(recompute)}"] = v.grad
        assert halo.pieces(48) == (1 if exchange_bytes is None
                                   else -(-halo.max_rows * 48 // exchange_bytes))
        torch.save({"grad": local.grad, "tanh_grad": z.grad, "lo": shard.lo, "H": halo.size,
                    "sent": halo.rows_sent, **got}, Path(out) / f"halo{rank}.pt")


def _layer(table):
    """Per row, a function whose backward reads the row: saves a view of the table."""
    return table.narrow(1, 1, 1).pow(3).sum((1, 2))


@pytest.mark.parametrize("exchange_bytes", [None, 100], ids=["one-piece", "pieces"])
def test_halo_rows_and_gradients_equal_the_whole_graph(tmp_path, exchange_bytes):
    """(``pieces``: every exchange cut into pieces of about 100 bytes, some empty, instead
    of one all-to-all.)"""
    spawn_ranks(_worker, args=(3, str(tmp_path / "init"), str(tmp_path), exchange_bytes),
                nprocs=3)
    src, dst, rel, x, c, bounds = _graph()
    want = torch.zeros_like(x).index_add_(0, src, c)
    got = [torch.load(tmp_path / f"halo{r}.pt", weights_only=True) for r in range(3)]
    assert [g["lo"] for g in got] == bounds[:-1]
    torch.testing.assert_close(torch.cat([g["grad"] for g in got]), want, rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(torch.cat([g["tanh_grad"] for g in got]),
                               want * (1 - torch.tanh(x) ** 2), rtol=1e-12, atol=1e-15)
    assert sum(g["H"] for g in got) == sum(g["sent"] for g in got) > 0
    for tanh in (False, True):
        v = x.clone().requires_grad_()
        t = torch.tanh(v) if tanh else v
        (_layer(t).index_select(0, src) * c[:, 0, 0]).sum().backward()
        for recompute in (False, True):
            have = torch.cat([g[f"layer_grad_{int(tanh)}{int(recompute)}"] for g in got])
            torch.testing.assert_close(have, v.grad, rtol=1e-12, atol=1e-15)
