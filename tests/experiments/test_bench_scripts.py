"""The benchmark scripts run end to end on a small real KG and print their JSON line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
from unittest import mock

import pytest

from tests.conftest import REPO


def run_script(name: str, *args: str) -> dict:
    """:func:`script_output`'s last line, a JSON object."""
    return json.loads(script_output(name, *args).strip().splitlines()[-1])


def script_output(name: str, *args: str) -> str:
    """What ``python experiments/NAME ARGS`` prints, run in this process (as ``__main__``,
    its folder on ``sys.path`` as a script has it, the environment restored after it; a
    spawn would cost seconds of imports). Scripts that start processes of their own are
    run with :func:`subprocess.run` by their tests."""
    script = REPO / "experiments" / name
    out = io.StringIO()
    with mock.patch.object(sys, "argv", [str(script), *args]), \
            mock.patch.object(sys, "path", [str(script.parent), *sys.path]), \
            mock.patch.dict(os.environ), \
            contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:  # sys.exit(0) at the end of a script
            assert stop.code in (0, None), f"{name} exited with {stop.code}"
    return out.getvalue()


def test_bench_encoder(umls_path):
    res = run_script("bench_encoder.py", "--dataset", str(umls_path), "--impls",
                     "native,chunked", "--repeats", "1")
    assert res["chunked"]["speedup_vs_chunked"] == 1.0
    assert res["native"]["total_s"] > 0


def test_bench_train_step(umls_path, tmp_path):
    res = run_script("bench_train_step.py", "--dataset", str(umls_path), "--steps", "1",
                     "--batch-size", "64", "--eval")
    assert res["impl"] == "auto" and res["step_seconds"] > 0 and res["eval_seconds"] > 0
    assert 0 < res["eval_mrr_untrained"] <= 1
    # the head's GEMM floor: FLOPs of the InteractE default (K = 3, F = 200, 200 filters of
    # 9 x 9 on a 20 x 20 image) at 64 queries over the measured peak
    per_query = 2 * 200 * 81 * 400 + 2 * 200 * 400 * 200 + 2 * 200 * 135
    assert res["head_tflop"] == pytest.approx(3 * 3 * per_query * 64 / 1e12, abs=1e-3)
    assert res["gemm_gflops"] > 0 and res["floor_ratio"] == pytest.approx(
        res["step_seconds"] / res["floor_seconds"], rel=0.02)


def test_bench_train_step_compare_precisions(umls_path):
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_train_step.py"),
                          "--dataset", str(umls_path), "--steps", "1", "--batch-size", "4",
                          "--compare", "--precision", "bf16"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    lines = out.strip().splitlines()
    runs = [json.loads(line) for line in lines[:3]]
    assert [(r["impl"], r["head_dtype"]) for r in runs] == [
        ("auto", "float32"), ("auto", "bfloat16"), ("eager", "float32")]
    assert lines[3].startswith("auto, head float32: step speed-up")
    assert lines[4].startswith("auto, head bfloat16: step speed-up")


def test_precision_study(umls_path):
    res = run_script("precision_study.py", "--dataset", str(umls_path), "--steps", "2",
                     "--batch-size", "8", "--valid", "16")
    assert res["steps"] == 2 and 0 <= res["max_rel_loss_diff"] < 0.05
    assert set(res["valid_mrr"]) == {"fp32", "bf16"}


def test_bench_mixture_bce_small():
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_mixture_bce.py"),
                          "--batch", "8", "--entities", "50", "--features", "4", "--repeat",
                          "1"], capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = [line.split() for line in out.strip().splitlines()[2:6]]
    assert [r[1] for r in rows] == ["eager", "chunked", "native", "native:auto"]
    assert all(float(r[2]) > 0 for r in rows)
    assert float(out.strip().splitlines()[-1].split("=")[-1]) < 1e-3  # eager vs native:auto


def test_bn_drift_trace():
    out = script_output("bn_drift.py", "--config",
                        str(REPO / "experiments" / "configs" / "umls_small.toml"),
                        "--epochs", "1", "--", "--batch-size", "256")
    row = json.loads(out.strip().splitlines()[-1])
    assert row["epoch"] == 1 and 0 < row["valid_mrr"] <= 1
    assert 0 < row["valid_mrr_bn1_batch_stats"] <= 1 and len(row["bn0_weight"]) == 1
    assert row["bn1_running_var_min"] > 0


def test_bench_recon_op_equals_dense():
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_recon.py"),
                          "--sizes", "600", "--dense-max", "600", "--blocks", "6"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    op, dense = (json.loads(line) for line in out.strip().splitlines())
    assert (op["method"], dense["method"]) == ("op", "dense")
    assert abs(op["loss"] - dense["loss"]) < 1e-4 * abs(dense["loss"])
    assert op["peak_rss_mb"] > 0 and op["seconds"] > 0


def test_make_user_kgs_is_transductive(tmp_path):
    from tests.conftest import SHARED

    if not (SHARED / "kg" / "WN18RR.tar.gz").exists():
        import pytest

        pytest.skip("needs ../shared/data/kg")
    script_output("make_user_kgs.py", "--data-dir", str(SHARED / "kg"), "--out", str(tmp_path))
    from disenkg.datasets import KGDataset

    for name in ("fb15k237-top400", "wn18rr-top2000"):
        ds = KGDataset.load(tmp_path / name)
        assert ds.check() == [] or all("also occur in train" in f for f in ds.check())
        assert len(ds.train) > 1000 and len(ds.test) > 50


def test_bench_gpu_smoke_on_cpu():
    """The prepared GPU benchmark runs end to end in its CPU smoke form (tiny sizes,
    chunked instead of triton), so a lent GPU session only has to run it."""
    out = script_output("bench_gpu.py", "--device", "cpu", "--small")
    res = json.loads(out.strip().splitlines()[-1])
    assert res["device"] == "cpu" and res["loss"]["speedup"] > 0
    assert abs(res["loss"]["chunked"]["loss"] - res["loss"]["eager"]["loss"]) < 1e-4
    d = res["default"]
    assert d["auto"]["step_seconds"] > 0 and d["plain"]["step_seconds"] > 0
    assert 0 < d["auto"]["test_mrr"] <= 1 and d["auto"]["epoch_with_validation_seconds"] > 0
    assert res["distmult"]["epoch_with_validation_seconds"] > 0


def test_bench_conv_head_small():
    res = run_script("bench_conv_head.py", "--impls", "auto,eager", "--images", "16",
                     "--repeats", "1")
    assert res["auto"]["seconds"] > 0 and res["eager"]["seconds"] > 0


def test_bench_distributed_small(tmp_path):
    """The sharding benchmark end to end on a small synthetic KG (1 process, then 2
    gloo processes with 2 entity shards): per-rank memory and step-time ratios come out,
    and each shard holds about half of the entity table."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "experiments" / "bench_distributed.py"),
                    "--entities", "3000", "--triples", "8000", "--dim", "60", "--steps", "1",
                    "--out", str(out)], capture_output=True, text=True, check=True, cwd=REPO,
                   timeout=600)
    res = json.loads(out.read_text())
    single, sharded = res["layouts"]["single"][0], res["layouts"]["sharded"]
    assert len(sharded) == 2 and res["sharded_peak_ratio"] > 0
    assert res["sharded_above_floor_ratio"] > 0
    assert all(r["import_mb"] <= r["floor_mb"] <= r["peak_mb"] for r in [single, *sharded])
    table = 3000 * 60 + 3000  # ConvE's entity rows and biases
    for rank in sharded:
        assert single["parameters_here"] - rank["parameters_here"] == table // 2


def test_bench_distributed_disenkgat_halo(tmp_path):
    """DisenKGAT's sharded layout (2 processes, degree cut) reports its halo: every edge
    received by one shard, halo rows below the other shard's entities, and the bytes the
    exchange received, counted at the exchange (4 passes a step: the training pass, the
    rows again in its backward (``--halo-recompute``, the default), its gradients back,
    the MI estimator's pass)."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "experiments" / "bench_distributed.py"),
                    "--model", "disenkgat", "--entities", "1500", "--triples", "4000",
                    "--dim", "8", "--components", "2", "--steps", "1", "--shards", "2",
                    "--partition", "degree", "--out", str(out)],
                   capture_output=True, text=True, check=True, cwd=REPO, timeout=600)
    res = json.loads(out.read_text())
    assert res["sharded_train_mb_ratio"] > 0 and res["partition"] == "degree"
    ranks = res["layouts"]["sharded"]
    assert sum(r["entities_here"] for r in ranks) == 1500
    edges = sum(r["local_edges"] for r in ranks)
    assert 2 * 3850 <= edges <= 2 * 4000  # both directions of the unique triples
    assert sum(r["halo_rows"] for r in ranks) == sum(r["rows_sent"] for r in ranks)
    for r in ranks:
        assert 0 < r["halo_rows"] <= 1500 - r["entities_here"]
        # 3 passes of the halo rows and 1 backward of the rows sent, per step
        want = (3 * r["halo_rows"] + r["rows_sent"]) * 2 * 8 * 4 / 2**20
        assert r["halo_mb_per_step"] == pytest.approx(want, abs=0.06)


def test_halo_sizes_on_umls(umls_path):
    """The halo table of UMLS' graph: every edge lands on one shard, a halo never exceeds
    the other shards' entities, the degree cut balances the edges at least as well as equal
    ranges (UMLS' ids are alphabetical), and the closed form for ids unrelated to the graph
    lies between 0 and N."""
    res = run_script("halo_sizes.py", "--dataset", str(umls_path), "--shards", "2", "3")
    N, E = res["entities"], res["edges"]
    for S in ("2", "3"):
        layout = res["layouts"][S]
        for part in ("range", "degree"):
            rows = layout[part]["shards"]
            assert sum(r["edges"] for r in rows) == E and sum(r["entities"] for r in rows) == N
            assert all(0 < r["halo"] <= N - r["entities"] for r in rows)
        assert layout["degree"]["edge_imbalance"] <= layout["range"]["edge_imbalance"]
        assert 0 < layout["expected_halo"] < N


def test_shard_estimates_from_the_recorded_bench():
    """The paper estimates from the recorded 500k-entity bench: the per-row costs fitted to
    the sharded ranks reproduce every one within 60 MB (one process, with glibc's default
    heap, is not fitted and lies above the fit), an own row costs more than a halo row, and
    each KG's memory per rank falls with the ranks while its halo outgrows its own rows."""
    res = run_script("shard_estimates.py", "--bench",
                     str(REPO / "experiments" / "results" / "bench_distributed_disenkgat.json"),
                     "--kgs", "FB15k-237", "ogbl-wikikg2")  # (Freebase-86M: seconds more)
    assert set(res["kgs"]) == {"FB15k-237", "ogbl-wikikg2"}
    costs = res["costs"]
    assert max(abs(r) for r in costs["residual_mb"]) < 60
    assert all(r < 0 for r in costs["one_process_residual_mb"])
    assert costs["own_rows_kf"] > costs["halo_rows_kf"] > 0
    for kg in res["kgs"].values():
        ranks = [kg["ranks"][s] for s in ("1", "8", "64", "512")]
        assert all(a["memory_gb"] >= b["memory_gb"] for a, b in zip(ranks, ranks[1:]))
        assert ranks[0]["halo"] == 0 and all(r["halo_over_own"] > 1 for r in ranks[1:])
