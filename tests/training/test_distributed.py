"""Data-parallel training over torch.distributed (gloo, 2 processes on this CPU): a 2-rank
step equals one process, distributed evaluation equals one process exactly, a torchrun
job writes one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from disenkg.datasets import KGDataset
from disenkg.models import DisenKGAT
from disenkg.nn.scorers import DistMultScorer, InteractEScorer
from disenkg.training import LinkTrainer, TrainConfig
from disenkg.training.distributed import DistContext
from disenkg.utils import seed_everything
from tests.conftest import REPO, cli_here, kg_archive
from tests.training.gloo import gloo_group, spawn_ranks


def _scorer(name):
    if name == "distmult":
        return DistMultScorer()
    # InteractE: batch norms before and after its conv head, synchronised across ranks;
    # chunks of 16 images, so the chunked head (patch moments) runs too
    return InteractEScorer(embedding_dim=12, k_h=4, k_w=3, num_filters=3, kernel_size=3,
                           feature_dropout=0.0, hidden_dropout=0.0, image_chunk=16)


def _trainer(ds, out, ctx, scorer="distmult"):
    """DisenKGAT without dropout and MI estimator: the setting in which a 2-rank step must
    equal one process up to float rounding."""
    seed_everything(0)
    ei, et = ds.graph()
    model = DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                      edge_index=ei, edge_type=et, num_components=2, init_dim=8, channels=12,
                      scorer=_scorer(scorer), encoder_dropout=0.0, attention_dropout=0.0,
                      mi_estimator=None).double()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, progress=False, eval_batch_size=50)
    return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=out, dist=ctx)


def _step_and_eval(tr):
    tr.optimizer.step = lambda: None  # keep the gradients of one step to compare
    loss = tr.train_step(torch.arange(5, 69))  # one global batch of 64 queries
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    metrics = tr.evaluator.evaluate(tr.model, tr.dataset.valid[:301], desc="valid")
    return {"loss": loss, "grads": grads, "metrics": metrics}


def _worker(rank, world, init_file, data, out, scorer):
    with gloo_group(rank, world, init_file):
        ds = KGDataset.load(data)
        tr = _trainer(ds, Path(out) / f"rank{rank}", DistContext(rank=rank, world_size=world),
                      scorer)
        torch.save(_step_and_eval(tr), Path(out) / f"result{rank}.pt")


@pytest.mark.parametrize("scorer", ["distmult", "interacte"])
def test_two_ranks_equal_one_process(tmp_path, scorer):
    """Loss and every parameter gradient of a 2-rank step equal one process's (float64,
    rtol 1e-10: only the summation order differs), also through the conv scorer's batch
    norms (global-batch statistics); the distributed validation metrics equal one
    process's exactly, on every rank."""
    data = str(kg_archive("umls"))
    ds = KGDataset.load(data)
    ref = _step_and_eval(_trainer(ds, tmp_path / "single", None, scorer))
    spawn_ranks(_worker, args=(2, str(tmp_path / "init"), data, str(tmp_path), scorer),
                nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"result{rank}.pt", weights_only=True)
        assert abs(got["loss"] - ref["loss"]) <= 1e-10 * abs(ref["loss"])
        assert got["grads"].keys() == ref["grads"].keys()
        for name, g in ref["grads"].items():
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-10, atol=1e-14,
                                       msg=lambda m, n=name: f"{n}: {m}")
        assert got["metrics"] == ref["metrics"]


def test_shard_splits_a_batch_disjointly():
    ids = torch.arange(11)
    parts = [DistContext(rank=r, world_size=3).shard(ids) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))
    assert [len(p) for p in parts] == [4, 4, 3]


def test_torchrun_two_ranks_write_one_run_directory(tmp_path):
    """``torchrun --nproc-per-node 2 -m disenkg.run``: 2 epochs on UMLS, one run directory
    holding the world size; resuming with another number of ranks is refused."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    flags = ["--dataset", str(kg_archive("umls")), "--epochs", "2", "--no-progress",
             "--output-dir", str(out), "--channels", "20", "--k-h", "5", "--k-w", "4",
             "--num-filters", "4", "--kernel-size", "3", "--batch-size", "256",
             "--init-dim", "16"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "disenkg.run", *flags]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("metrics written to") == 1  # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0 < metrics["test"]["mrr"] <= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["args"]["world_size"] == 2 and cfg["args"]["per_rank_batch"] == 128
    assert len((out / "history.csv").read_text().splitlines()) == 3
    one = cli_here("--resume", "--output-dir", str(out), "--epochs", "3", "--no-progress")
    assert one.returncode != 0 and "written by a run of 2 process(es)" in one.stderr


@pytest.mark.parametrize("world", [1])
def test_single_process_has_no_context(world, monkeypatch):
    from disenkg.training.distributed import init_from_env

    monkeypatch.setenv("WORLD_SIZE", str(world))
    assert init_from_env(torch.device("cpu")) is None


def _bn_worker(rank, world, init_file, out):
    from disenkg.ops.sync_batch_norm import batch_norm
    from disenkg.utils.distributed import sync_batch_stats

    with gloo_group(rank, world, init_file):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(7, 3, 4, 5, generator=g, dtype=torch.float64)
        up = torch.randn(7, 3, 4, 5, generator=g, dtype=torch.float64)
        bn = torch.nn.BatchNorm2d(3).double()
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.uniform_(-1, 1, generator=g)
        mine = x[rank::world].clone().requires_grad_()
        with sync_batch_stats():
            y = batch_norm(bn, mine)
            (y * up[rank::world]).sum().backward()
        torch.save({"y": y.detach(), "dx": mine.grad, "dgamma": bn.weight.grad,
                    "dbeta": bn.bias.grad, "mean": bn.running_mean, "var": bn.running_var},
                   Path(out) / f"bn{rank}.pt")


def test_sync_batch_norm_equals_batch_norm_on_the_whole_batch(tmp_path):
    """The synchronised batch norm on 2 ranks (rows split 4 / 3) against nn.BatchNorm2d on
    all rows: outputs and input gradients of each rank's rows, the summed parameter
    gradients and the running statistics (float64)."""
    spawn_ranks(_bn_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 4, 5, generator=g, dtype=torch.float64).requires_grad_()
    up = torch.randn(7, 3, 4, 5, generator=g, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    y = bn(x)
    (y * up).sum().backward()
    got = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in (0, 1)]
    for r in (0, 1):
        torch.testing.assert_close(got[r]["y"], y[r::2].detach())
        torch.testing.assert_close(got[r]["dx"], x.grad[r::2])
        torch.testing.assert_close(got[r]["mean"], bn.running_mean)
        torch.testing.assert_close(got[r]["var"], bn.running_var)
    torch.testing.assert_close(got[0]["dgamma"] + got[1]["dgamma"], bn.weight.grad)
    torch.testing.assert_close(got[0]["dbeta"] + got[1]["dbeta"], bn.bias.grad)
