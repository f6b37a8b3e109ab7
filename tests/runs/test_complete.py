"""Completing a whole KG (issue 32): the same answers, in the same order, as predict for
every query; streamed TSV / Parquet; resume; restrictions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import disenkg
from disenkg.ops import native
from disenkg.ops.running_topk import top_k_exact
from disenkg.run import main as run_main
from disenkg.runs.complete import CompletionBatch, open_writer
from disenkg.runs.complete import complete as run_complete
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "runs_0_1_0"


@pytest.mark.parametrize("seed", range(20))
def test_top_k_exact_equals_a_stable_sort(seed):
    g = torch.Generator().manual_seed(seed)
    B, N, k = 7, 23, int(torch.randint(1, 30, (1,), generator=g))
    x = torch.randint(0, 5, (B, N), generator=g).float()  # many ties
    x[0, :4] = -torch.inf
    row, col, rank = top_k_exact(x, k)
    order = torch.argsort(x, dim=1, descending=True, stable=True)[:, :min(k, N)]
    want = [(b, int(order[b, j]), j) for b in range(B) for j in range(order.shape[1])]
    assert list(zip(row.tolist(), col.tolist(), rank.tolist())) == want


@pytest.mark.parametrize("name", ["umls-disenkgat", "umls-conve"])
# tile 16: UMLS's 135 entities in 9 tiles (the filter crossing tile borders)
@pytest.mark.parametrize("tile,filter", [(512, "known"), (512, "none"), (16, "known")])
def test_every_query_equals_predict(name, filter, tile, monkeypatch):
    monkeypatch.setattr("disenkg.runs.trained.SCORE_TILE", tile)
    run = disenkg.load_run(FIXTURES / name)
    ds = run.dataset
    k = 7
    got = {}
    for b in run.complete(k=k, filter=filter, batch_size=50):
        for q, a, r, s in zip(b.query, b.answer, b.rank, b.score):
            got.setdefault((b.relation, b.direction, int(q)), []).append((int(r), int(a),
                                                                          float(s)))
    queries = [(e, r, d) for r in range(ds.num_relations) for d in ("tail", "head")
               for e in range(ds.num_entities)]
    preds = run.predict([(ds.entities[e], ds.relations[r], None) if d == "tail" else
                         (None, ds.relations[r], ds.entities[e]) for e, r, d in queries],
                        k=k, filter=filter)
    for (e, r, d), p in zip(queries, preds):
        rows = got.get((r, d, e), [])
        assert [a for _, a, _ in rows] == [ds.entities.index(x["entity"]) for x in p]
        assert [rk for rk, _, _ in rows] == list(range(1, len(p) + 1))
        assert [s for _, _, s in rows] == pytest.approx([x["probability"] for x in p],
                                                        rel=1e-5)


def test_the_command_writes_tsv_resumes_and_restricts(tmp_path):
    run_dir = FIXTURES / "umls-conve"
    run = disenkg.load_run(run_dir)
    out = tmp_path / "all.tsv"
    assert run_main(["complete", "--run-dir", str(run_dir), "--output", str(out), "--top-k",
                     "3", "--no-progress"]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8"), delimiter="\t"))
    assert rows[0] == ["head", "relation", "tail", "direction", "rank", "score"]
    ds = run.dataset
    assert len(rows) - 1 <= ds.num_entities * ds.num_relations * 2 * 3
    first = rows[1]
    top = run.predict_tails(first[0], first[1], k=1)[0]
    assert (first[2], first[3], first[4]) == (top["entity"], "tail", "1")
    assert float(first[5]) == pytest.approx(top["probability"], rel=1e-5)
    assert not (tmp_path / "all.tsv.progress.json").exists()
    # an existing output is not replaced
    assert run_main(["complete", "--run-dir", str(run_dir), "--output", str(out),
                     "--no-progress"]) == 2
    # interrupted after two relations, then resumed: the same bytes as one go
    import disenkg.cli.complete as cc

    real = cc.complete
    calls = {"n": 0}

    def interrupted(*a, **kw):
        for b in real(*a, **kw):
            yield b
            if b.last:
                calls["n"] += 1
                if calls["n"] == 2:
                    raise KeyboardInterrupt

    part = tmp_path / "part.tsv"
    cc.complete = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run_main(["complete", "--run-dir", str(run_dir), "--output", str(part),
                      "--top-k", "3", "--no-progress"])
    finally:
        cc.complete = real
    assert (tmp_path / "part.tsv.progress.json").exists()
    with part.open("a") as fh:
        fh.write("half a line of the third relation")
    assert run_main(["complete", "--run-dir", str(run_dir), "--output", str(part),
                     "--top-k", "3", "--no-progress", "--resume"]) == 0
    assert part.read_bytes() == out.read_bytes()
    # restrictions and a probability floor
    ents = tmp_path / "e.txt"
    ents.write_text(f"{ds.entities[3]}\n{ds.entities[5]}\n")
    few = tmp_path / "few.tsv"
    assert run_main(["complete", "--run-dir", str(run_dir), "--output", str(few),
                     "--relations", ds.relations[2], "--entities", str(ents), "--direction",
                     "head", "--min-probability", "0.2", "--no-progress"]) == 0
    body = [r for r in csv.reader(few.open(encoding="utf-8"), delimiter="\t")][1:]
    assert all(r[1] == ds.relations[2] and r[3] == "head" and r[2] in ents.read_text()
               and float(r[5]) >= 0.2 for r in body)


def test_parquet_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    run_dir = FIXTURES / "umls-disenkgat"
    out = tmp_path / "all.parquet"
    assert run_main(["complete", "--run-dir", str(run_dir), "--output", str(out), "--top-k",
                     "2", "--relations", "location_of", "--no-progress"]) == 0
    t = pq.read_table(out).to_pydict()
    assert set(t["relation"]) == {"location_of"} and set(t["rank"]) == {1, 2}
    assert np.all(np.asarray(t["score"]) > 0)


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
def test_native_lines_equal_numpy_lines(tmp_path):
    names = ["a", "Ünïcode name", "x" * 300, "/m/0gslw", ""]
    rels = ["r0", "/people/person/nationality"]
    g = np.random.default_rng(0)
    n = 2000
    score = np.concatenate([[0.0, 1.0, 1e-30, 1.5e-5, 0.123456789, 0.9999996, 3.4e38],
                            g.random(n - 7) ** 8]).astype(np.float32)
    batches = [CompletionBatch(relation=i % 2, direction=("tail", "head")[i % 2],
                               query=g.integers(0, 5, n), answer=g.integers(0, 5, n),
                               rank=g.integers(1, 10_001, n), score=score, last=True)
               for i in range(3)]
    out = {}
    for impl in ("native", "eager"):
        w = open_writer(tmp_path / f"{impl}.tsv", entity_names=names, relation_names=rels,
                        impl=impl)
        for b in batches:
            w.write(b)
        w.close()
        out[impl] = (tmp_path / f"{impl}.tsv").read_bytes()
    assert out["native"] == out["eager"]
    assert out["native"].count(b"\n") == 3 * n + 1


@pytest.mark.parametrize("name", ["umls-disenkgat", "umls-conve"])
def test_both_top_k_kernels_give_the_same_batches(name):
    if not native.available():
        pytest.skip("native kernels unavailable")
    run = disenkg.load_run(FIXTURES / name)
    got = {impl: [(b.relation, b.direction, b.query.tolist(), b.answer.tolist(),
                   b.rank.tolist(), b.score.tolist())
                  for b in run_complete(run, k=4, relations=[0, 5], impl=impl,
                                        batch_size=64)]
           for impl in ("native", "eager")}
    assert got["native"] == got["eager"] and got["native"]


@pytest.mark.parametrize("name", ["umls-disenkgat", "umls-conve"])
def test_tiled_scores_equal_the_models_whole_rows(name, monkeypatch):
    monkeypatch.setattr("disenkg.runs.trained.SCORE_TILE", 16)
    run = disenkg.load_run(FIXTURES / name)
    h = torch.arange(40)
    r = torch.arange(40) % (2 * run.dataset.num_relations)
    with torch.no_grad():
        whole = run.model.score(run.model.encode(), h, r).float()
    torch.testing.assert_close(run.scores(h, r), whole, rtol=1e-5, atol=1e-5)
    assert torch.is_grad_enabled()  # the tile generator leaves the caller's mode alone
