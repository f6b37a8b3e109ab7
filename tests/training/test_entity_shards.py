"""Entity-sharded scoring (``--entity-shards``): 2 shards on 2 gloo processes give the
one-process loss, gradients and evaluation; the loss decomposes over entity slices;
checkpoints hold the whole model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from disenkg.datasets import KGDataset
from disenkg.errors import ConfigError
from disenkg.models import ConvE, DisenKGAT
from disenkg.nn.scorers import DistMultScorer, InteractEScorer, TransEL1Scorer
from disenkg.ops import mixture_bce
from disenkg.training import LinkTrainer, TrainConfig
from disenkg.training.distributed import DistContext
from disenkg.utils import seed_everything
from disenkg.utils.entity_shards import EntityShard, balanced_bounds, shard_bounds
from tests.conftest import kg_archive
from tests.training.gloo import gloo_group, spawn_ranks


def _model(ds, name, mi=True, layers=1, composition="cross"):
    """Models without dropout; DistMult's DisenKGAT keeps the MI estimator with ``mi`` (its
    penalty and its estimators' optimiser must count once per batch; CLUB's estimate is not
    a mean over queries, so it equals one process only when the batch is not split)."""
    if name == "conve":
        return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                     embedding_dim=12, k_h=4, k_w=3, num_filters=3, kernel_size=3,
                     input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0,
                     image_chunk=16)
    scorer = {"distmult": DistMultScorer, "transe": lambda: TransEL1Scorer(gamma=9.0),
              "interacte": lambda: InteractEScorer(
                  embedding_dim=12, k_h=4, k_w=3, num_filters=3, kernel_size=3,
                  feature_dropout=0.0, hidden_dropout=0.0, image_chunk=16)}[name]()
    ei, et = ds.graph()
    return DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                     edge_index=ei, edge_type=et, num_components=2, init_dim=8, channels=12,
                     scorer=scorer, encoder_dropout=0.0, attention_dropout=0.0,
                     num_layers=layers, composition=composition,
                     mi_estimator="club_b" if name == "distmult" and mi else None)


def _trainer(ds, out, ctx, name, shards, mi=True, layers=1, composition="cross",
             partition="range", halo_recompute=True):
    seed_everything(0)
    model = _model(ds, name, mi, layers, composition).double()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, progress=False, eval_batch_size=50,
                      entity_shards=shards, partition=partition,
                      halo_recompute=halo_recompute)
    return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=out, dist=ctx)


def _step_and_eval(tr):
    tr.optimizer.step = lambda: None  # keep the gradients of one step to compare
    loss = tr.train_step(torch.arange(5, 69))
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    metrics = tr.evaluator.evaluate(tr.model, tr.dataset.valid[:301], desc="valid")
    return {"loss": loss, "grads": grads, "metrics": metrics,
            "state": tr.model_state(), "sharded": sorted(tr._sharded)}


def _worker(rank, world, init_file, data, out, name, shards, variant):
    with gloo_group(rank, world, init_file):
        ds = KGDataset.load(data)
        tr = _trainer(ds, Path(out) / f"rank{rank}", DistContext(rank=rank, world_size=world),
                      name, shards, mi=world == shards, **variant)
        if variant.get("partition") == "degree":  # the cut follows the edges received
            assert tr.shard.bounds != tuple(shard_bounds(ds.num_entities, shards))
        res = _step_and_eval(tr)
        other = Path(out) / "one_process_state.pt"
        if other.exists():  # a one-process model loaded into the shards
            tr._load_model_state(torch.load(other, weights_only=True))
            res["loaded_metrics"] = tr.evaluator.evaluate(tr.model, tr.dataset.valid[:301])
        torch.save(res, Path(out) / f"result{rank}.pt")


TWO_LAYERS = {"layers": 2, "partition": "degree"}


@pytest.mark.parametrize("name,world,variant", [
    ("distmult", 2, {}), ("interacte", 2, {}), ("transe", 2, {}), ("conve", 2, {}),
    ("distmult", 4, {}), ("interacte", 4, TWO_LAYERS),
    ("distmult", 2, {**TWO_LAYERS, "composition": "sub"}),
    ("distmult", 2, {**TWO_LAYERS, "halo_recompute": False})],
    ids=["distmult-2", "interacte-2", "transe-2", "conve-2", "distmult-4",
         "interacte-4-two-layers-degree", "distmult-2-two-layers-degree-sub",
         "distmult-2-two-layers-halo-held"])
def test_two_entity_shards_equal_one_process(tmp_path, name, world, variant):
    """2 shards (UMLS' 135 entities split 67 / 68, or by edges received) against one
    process, float64, on 2 ranks, and on 4 ranks = 2 batch slices x 2 shards: the loss and
    every gradient (the sharded rows' gradients concatenated over a slice's shards) to rtol
    1e-10, the gathered model state equal to the one-process state (rtol 1e-12), and the
    validation metrics (ranks summed over shards) exactly equal, on every rank.
    DisenKGAT's encoder runs partitioned by receiver (halo exchange, batch norm over both
    shards' rows), with one or two layers, the fused (``cross``) or the edge-chunk
    (``sub``) schedule; on 2 ranks a one-process model (changed) loaded into the shards
    evaluates to its one-process metrics; the halo rows exchanged again in backward (the
    default) or held. InteractE's batch norms see the global batch;
    DistMult's 2-rank runs keep the CLUB estimator (its penalty and its own optimiser)."""
    data = str(kg_archive("umls"))
    ds = KGDataset.load(data)
    single = _trainer(ds, tmp_path / "single", None, name, 1, mi=world == 2,
                      **{k: v for k, v in variant.items()
                         if k not in ("partition", "halo_recompute")})
    ref = _step_and_eval(single)
    ref["state"] = {k: v.clone() for k, v in ref["state"].items()}  # not the live tensors
    if world == 2 and name != "conve":  # and the reverse: a one-process model, changed
        state = {k: v.clone() for k, v in ref["state"].items()}
        g = torch.Generator().manual_seed(5)
        state["init_embed"] += 0.1 * torch.randn(state["init_embed"].shape, generator=g,
                                                 dtype=state["init_embed"].dtype)
        torch.save(state, tmp_path / "one_process_state.pt")
        single._load_model_state(state)
        ref["loaded_metrics"] = single.evaluator.evaluate(single.model, ds.valid[:301])
        assert ref["loaded_metrics"] != ref["metrics"]
    spawn_ranks(_worker, args=(world, str(tmp_path / "init"), data, str(tmp_path), name, 2,
                               variant), nprocs=world)
    got = [torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(world)]
    sharded = got[0]["sharded"]
    assert sharded, "the model sharded nothing"
    for g in got:
        assert abs(g["loss"] - ref["loss"]) <= 1e-10 * abs(ref["loss"])
        assert g["grads"].keys() == ref["grads"].keys()
        for key, want in ref["grads"].items():
            have = (torch.cat([got[0]["grads"][key], got[1]["grads"][key]])
                    if key in sharded else g["grads"][key])
            torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-13,
                                       msg=lambda m, k=key: f"{k}: {m}")
        assert g["state"].keys() == ref["state"].keys()
        for key, want in ref["state"].items():
            # parameters bit-equal; batch-norm running statistics summed in another order
            torch.testing.assert_close(g["state"][key], want, rtol=1e-12, atol=1e-15)
        assert g["metrics"] == ref["metrics"]
        assert g.get("loaded_metrics") == ref.get("loaded_metrics")


@pytest.mark.parametrize("impl", ["eager", "chunked"])
@pytest.mark.parametrize("order", ["after", "before"])
def test_mixture_bce_decomposes_over_entity_slices(order, impl):
    """The mean loss over N entities is the sum over slices of each slice's summed loss
    (label smoothing with the global 1/N, positives routed to their slice) / (B N), which
    is each slice's ``"mean"`` given ``total_entities=N``, and so are its gradients
    (float64, odd shapes, 3 uneven slices)."""
    g = torch.Generator().manual_seed(0)
    B, K, F, N = 7, 3, 5, 23
    q = torch.randn(B, K, F, dtype=torch.float64, generator=g, requires_grad=True)
    e = torch.randn(N, K, F, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(B, K, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(N, dtype=torch.float64, generator=g, requires_grad=True)
    rows = torch.randint(0, B, (30,), generator=g)
    cols = torch.randint(0, N, (30,), generator=g)
    full = mixture_bce(q, e, a, (rows, cols), bias=b, label_smoothing=0.1, order=order,
                       impl=impl)
    want = torch.autograd.grad(full, (q, e, a, b))
    bounds = shard_bounds(N, 3)
    for reduction in ("sum", "mean"):
        total = 0
        for s in range(3):
            shard = EntityShard(rank=s, num_shards=3, num_entities=N)
            assert (shard.lo, shard.hi) == (bounds[s], bounds[s + 1])
            r, c = shard.local_pairs(rows, cols)
            part = mixture_bce(
                q, e[shard.lo:shard.hi], a, (r, c), bias=b[shard.lo:shard.hi],
                label_smoothing=0.1, order=order, reduction=reduction, total_entities=N,
                impl=impl)
            total = total + (part / (B * N) if reduction == "sum" else part)
        got = torch.autograd.grad(total, (q, e, a, b))
        torch.testing.assert_close(total, full, rtol=1e-12, atol=0)
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("impl", ["eager", "chunked"])
def test_mixture_bce_mean_over_query_slices(impl):
    """A data-parallel rank's share: each slice of the queries with ``total_queries=B`` adds
    up to the whole batch's mean, loss and gradients (float64, uneven slices, with an
    entity slice too); a total below the queries given is refused."""
    g = torch.Generator().manual_seed(1)
    B, K, F, N = 9, 2, 4, 11
    q = torch.randn(B, K, F, dtype=torch.float64, generator=g, requires_grad=True)
    e = torch.randn(N, K, F, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(B, K, dtype=torch.float64, generator=g, requires_grad=True)
    rows = torch.randint(0, B, (20,), generator=g)
    cols = torch.randint(0, N, (20,), generator=g)
    full = mixture_bce(q, e, a, (rows, cols), label_smoothing=0.1, impl=impl)
    want = torch.autograd.grad(full, (q, e, a))
    total = 0
    for lo, hi in ((0, 2), (2, 9)):
        for c0, c1 in ((0, 5), (5, N)):
            keep = (rows >= lo) & (rows < hi) & (cols >= c0) & (cols < c1)
            total = total + mixture_bce(
                q[lo:hi], e[c0:c1], a[lo:hi], (rows[keep] - lo, cols[keep] - c0),
                label_smoothing=0.1, total_entities=N, total_queries=B, impl=impl)
    torch.testing.assert_close(total, full, rtol=1e-12, atol=0)
    for x, y in zip(torch.autograd.grad(total, (q, e, a)), want):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="total_queries"):
        mixture_bce(q, e, a, (rows, cols), total_queries=B - 1, impl=impl)


def test_shard_bounds_and_clear_errors():
    assert shard_bounds(10, 3) == [0, 3, 6, 10]
    assert balanced_bounds(torch.ones(9), 3) == [0, 3, 6, 9]
    assert balanced_bounds(torch.tensor([1., 1, 1, 1, 4, 4]), 3) == [0, 4, 5, 6]
    assert balanced_bounds(torch.tensor([100., 1, 1, 1, 1]), 3) == [0, 1, 2, 5]  # >= 1 each
    shard = EntityShard(rank=1, num_shards=3, num_entities=6, bounds=(0, 4, 5, 6))
    assert (shard.lo, shard.hi, shard.owner(torch.arange(6)).tolist()) == (4, 5, [0] * 4 + [1, 2])
    with pytest.raises(ValueError, match=r"shard bounds must rise strictly from 0 to 6"):
        EntityShard(rank=0, num_shards=3, num_entities=6, bounds=(0, 4, 4, 6))
    with pytest.raises(ValueError, match="cannot split 2 entities into 3"):
        shard_bounds(2, 3)
    with pytest.raises(ValueError, match="cannot split 2 entities into 3"):
        EntityShard(rank=0, num_shards=3, num_entities=2)
    with pytest.raises(ValueError, match=r"shard rank must lie in \[0, 2\), got 2"):
        EntityShard(rank=2, num_shards=2, num_entities=10)
    with pytest.raises(ValueError, match="expected 10 rows to shard, got 9"):
        EntityShard(rank=0, num_shards=2, num_entities=10).slice(torch.zeros(9, 3))
    with pytest.raises(ValueError, match="smaller than the 5 entities"):
        mixture_bce(torch.randn(2, 1, 3), torch.randn(5, 1, 3), torch.zeros(2, 1),
                    torch.zeros(2, 5), label_smoothing=0.1, total_entities=4)


def test_degree_partition_needs_a_graph_encoder():
    """--partition degree cuts by DisenKGAT's edges received (in-degree + 1 self loop) and
    is refused, naming the fix, for a model without a graph encoder."""
    from types import SimpleNamespace

    ds = KGDataset.load(kg_archive("umls"))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, entity_shards=2, partition="degree")
    here = SimpleNamespace(config=cfg)
    model = _model(ds, "distmult")
    loads = model.entity_loads()
    assert int(loads.sum()) == model.message_index.shape[1] + ds.num_entities
    bounds = LinkTrainer._shard_bounds(here, model)
    assert bounds == balanced_bounds(loads, 2) and bounds != shard_bounds(ds.num_entities, 2)
    with pytest.raises(ConfigError, match="ConvE has no graph encoder") as err:
        LinkTrainer._shard_bounds(here, _model(ds, "conve"))
    assert "use --partition range" in str(err.value.hint)


def test_entity_shards_need_as_many_processes(tmp_path):
    ds = KGDataset.load(kg_archive("umls"))
    with pytest.raises(ValueError, match="2 entity shards need a multiple of 2 processes"):
        _trainer(ds, tmp_path, None, "conve", 2)


def test_torchrun_entity_shards_write_one_whole_model(tmp_path):
    """``torchrun --nproc-per-node 2 -m disenkg.run --entity-shards 2``: 2 epochs on UMLS,
    one run directory whose checkpoint is the whole model: evaluating it in one process
    gives the test metrics the 2 shards reported. Sharding without torchrun is refused."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, cli_here

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    flags = ["--dataset", str(kg_archive("umls")), "--epochs", "2", "--no-progress",
             "--output-dir", str(out), "--channels", "20", "--k-h", "5", "--k-w", "4",
             "--num-filters", "4", "--kernel-size", "3", "--batch-size", "256",
             "--init-dim", "16", "--entity-shards", "2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "disenkg.run", *flags]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("metrics written to") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())["args"]
    assert (cfg["world_size"], cfg["entity_shards"], cfg["per_rank_batch"]) == (2, 2, 256)
    ev = cli_here("evaluate", "--run-dir", str(out), "--split", "test", "--json")
    assert ev.returncode == 0, ev.stderr[-3000:]
    one = json.loads(ev.stdout[ev.stdout.index("{"):])
    for key in ("mrr", "mr", "hits@1", "hits@10"):
        assert one[key] == pytest.approx(metrics["test"][key], abs=1e-9), key
    alone = cli_here(*flags[:-2], "--output-dir", str(tmp_path / "alone"),
                     "--entity-shards", "2")
    assert alone.returncode != 0
    assert "--entity-shards 2 needs a multiple of 2 processes" in alone.stderr


def _resume_worker(rank, world, init_file, data, out):
    with gloo_group(rank, world, init_file):
        ds = KGDataset.load(data)
        ctx = DistContext(rank=rank, world_size=world)

        def trainer(path, epochs):
            seed_everything(0)
            model = _model(ds, "distmult").double()
            cfg = TrainConfig(epochs=epochs, batch_size=256, lr=0.01, progress=False,
                              eval_batch_size=200, entity_shards=world, patience=0)
            return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=path,
                               dist=ctx)

        straight = trainer(Path(out) / "straight", 2)
        straight.fit()
        trainer(Path(out) / "resumed", 1).fit()
        resumed = trainer(Path(out) / "resumed", 2)
        resumed.fit(resume=True)
        torch.save({"straight": straight.state_dict()["model"],
                    "resumed": resumed.state_dict()["model"],
                    "moments": resumed.optimizer_state()["state"]},
                   Path(out) / f"resume{rank}.pt")


def test_entity_sharded_run_resumes_exactly(tmp_path):
    """2 sharded epochs straight equal 1 epoch, a checkpoint (whole model and whole Adam
    moments, gathered from both shards) and 1 resumed epoch, to the bit."""
    data = str(kg_archive("umls"))
    spawn_ranks(_resume_worker, args=(2, str(tmp_path / "init"), data, str(tmp_path)),
                nprocs=2)
    got = torch.load(tmp_path / "resume0.pt", weights_only=True)
    for key, want in got["straight"].items():
        torch.testing.assert_close(got["resumed"][key], want, rtol=0, atol=0,
                                   msg=lambda m, k=key: f"{k}: {m}")
    saved = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert saved["entity_shards"] == 2
    assert saved["model"]["init_embed"].shape[0] == 135  # the whole table
    sizes = {v["exp_avg"].shape[0] for v in got["moments"].values() if v["exp_avg"].dim()}
    assert 135 in sizes


def _ranks_worker(rank, world, init_file, out):
    from disenkg.evaluation.evaluator import sharded_ranks

    with gloo_group(rank, world, init_file):
        g = torch.Generator().manual_seed(0)
        N, B = 11, 6
        scores = torch.randint(0, 4, (B, N), generator=g).double()  # many ties
        target = torch.randint(0, N, (B,), generator=g)
        kr = torch.randint(0, B, (15,), generator=g)
        kc = torch.randint(0, N, (15,), generator=g)
        shard = EntityShard(rank=rank, num_shards=world, num_entities=N)
        got = sharded_ranks(scores[:, shard.lo:shard.hi].contiguous(), target, (kr, kc), shard)
        bad = scores[:, shard.lo:shard.hi].clone()
        if rank == 1:
            bad[2, 0] = float("nan")
        try:
            sharded_ranks(bad, target, (kr, kc), shard)
            error = ""
        except ValueError as err:
            error = str(err)
        torch.save({"opt": got.optimistic, "pes": got.pessimistic, "error": error},
                   Path(out) / f"ranks{rank}.pt")


def test_sharded_ranks_equal_filtered_ranks(tmp_path):
    """Ranks from 3 shards of 11 entities (integer scores: many ties) equal
    filtered_ranks on the whole rows; a NaN on one shard makes every rank raise."""
    from disenkg.evaluation.ranks import filtered_ranks

    spawn_ranks(_ranks_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3)
    g = torch.Generator().manual_seed(0)
    N, B = 11, 6
    scores = torch.randint(0, 4, (B, N), generator=g).double()
    target = torch.randint(0, N, (B,), generator=g)
    kr = torch.randint(0, B, (15,), generator=g)
    kc = torch.randint(0, N, (15,), generator=g)
    want = filtered_ranks(scores, target, (kr, kc))
    for r in range(3):
        got = torch.load(tmp_path / f"ranks{r}.pt", weights_only=True)
        assert torch.equal(got["opt"], want.optimistic)
        assert torch.equal(got["pes"], want.pessimistic)
        assert "1 NaN value(s)" in got["error"]
