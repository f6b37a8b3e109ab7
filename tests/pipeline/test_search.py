"""The plain command's built-in search: its candidates, when it runs, and a whole search on
UMLS with a tiny model (candidates as run directories never tested, the record, the chosen
settings trained in the run directory, resume, refusals)."""

from __future__ import annotations

import csv
import json

import pytest

import disenkg
from disenkg.datasets import KGDataset
from disenkg.defaults import KGStats
from disenkg.errors import ConfigError, RunDirError
from disenkg.pipeline import search as search_mod
from disenkg.pipeline.config import Layer, LinkConfig
from disenkg.pipeline.run import prepare_run
from disenkg.pipeline.search import (
    MIN_RUNG_EPOCHS,
    Candidate,
    SearchPlan,
    candidates,
    plan_search,
    run_search,
)
from disenkg.pipeline.trial import follow_dim
from disenkg.presets import PRESET_SIZES, nearest_preset

#: a model small enough for a search of a few dozen epochs in seconds
FAST = dict(init_dim=16, channels=16, k_h=4, k_w=4, num_filters=8, kernel_size=3,
            num_components=2, batch_size=512, no_progress=True, preset="none",
            log_level="WARNING")


def _plan(dataset, **values):
    layers = [Layer("flag", {"dataset": str(dataset), **values}, "test")]
    config = LinkConfig.resolve(layers)
    ds = KGDataset.load(str(dataset))
    return plan_search(layers, config, ds), config, ds


def _cands(dataset, **values):
    layers = [Layer("flag", {"dataset": str(dataset), **values}, "test")]
    config = LinkConfig.resolve(layers)
    ds = KGDataset.load(str(dataset))
    return candidates(config, config.derive(ds)[0], KGStats.of(ds))


def test_preset_sizes_are_the_kgs_and_the_nearest_is_by_both_sizes(umls_path, kinship_path):
    for name, path in (("umls", umls_path), ("kinship", kinship_path)):
        ds = KGDataset.load(str(path))
        assert PRESET_SIZES[name] == (ds.num_entities, len(ds.train))
    assert nearest_preset(40, 1200) == "umls"  # a tiny KG: UMLS is closer than Kinship
    assert nearest_preset(100, 9000) == "kinship"
    assert nearest_preset(15000, 300000) == "FB15k-237"
    assert nearest_preset(40000, 90000) == "WN18RR"


def test_candidates_start_with_the_size_derived_and_change_only_what_was_not_given(umls_path):
    cands = _cands(umls_path, preset="none")
    names = [c.name for c in cands]
    assert names[0] == "size-derived" and cands[0].values == {}
    assert {"lr x3", "lr /3", "K = 1", "narrower", "more dropout"} <= set(names)
    assert len(names) == len(set(names)) <= search_mod.MAX_CANDIDATES
    lr = {c.name: c.values["lr"] for c in cands if c.name.startswith("lr")}
    assert lr == {"lr x3": 0.009, "lr /3": 0.001}  # around the derived 0.003
    # given settings are never moved: no lr candidate, no width candidate, no K candidate
    fixed = _cands(umls_path, preset="none", lr=0.002, channels=100, num_components=2)
    for c in fixed:
        assert not {"lr", "channels", "k_h", "num_filters", "num_components"} & set(c.values)
    assert {"lr x3", "wider", "narrower", "K = 1"}.isdisjoint(c.name for c in fixed)


def test_a_tiny_kg_gets_the_nearest_presets_settings_as_a_candidate(tmp_path, kinship_path):
    """40 entities (the size rule's narrow band): the UMLS preset (F = 100, batch 128) is
    the second candidate, without the preset's run length."""
    ds = KGDataset.load(str(kinship_path))
    keep = set(range(40))
    d = tmp_path / "tiny"
    d.mkdir()
    for split in ("train", "valid", "test"):
        rows = [t for t in getattr(ds, split).tolist() if t[0] in keep and t[2] in keep]
        (d / f"{split}.txt").write_text("".join(
            f"{ds.entities[h]}\t{ds.relations[r]}\t{ds.entities[t]}\n" for h, r, t in rows))
    cands = _cands(d, preset="none")
    assert cands[1].name == "preset umls"
    assert cands[1].values["channels"] == 100 and cands[1].values["batch_size"] == 128
    assert not {"epochs", "patience", "min_epochs"} & set(cands[1].values)


def test_when_the_search_runs(umls_path, kinship_path, monkeypatch):
    (plan, why), _, _ = _plan(umls_path, preset="none")
    assert plan is not None and plan.candidates[0].name == "size-derived"
    assert plan.epochs(0, 1) >= MIN_RUNG_EPOCHS and plan.epochs(0, 2) > plan.epochs(0, 1)
    # every candidate's time in a rung is the same; its epochs follow its epoch estimate
    for i, s in enumerate(plan.epoch_seconds):
        assert plan.epochs(i, 1) == max(1, round(plan.rung_seconds / s))
    # the whole search fits its share of the budget (estimates)
    m = plan.survivors
    assert plan.rung_seconds * (len(plan.candidates) + 2 * m) == pytest.approx(
        search_mod.SEARCH_SHARE * plan.budget_seconds)
    assert _plan(umls_path)[0] == (None, "preset umls: its settings are tuned")
    assert _plan(umls_path, preset="none", search="none")[0][0] is None
    plan, why = _plan(umls_path, preset="none", epochs=30)[0]  # a run, not a budget
    assert plan is None and why.startswith("epochs = 30 given (flag)")
    assert _plan(umls_path, preset="none", epochs=30, search="on")[0][0] is not None
    plan, why = _plan(kinship_path, preset="none")[0]  # an epoch of Kinship costs ~1.1 s
    assert plan is None and f"of the {search_mod.MIN_FINAL_EPOCHS} a run needs" in why
    plan, why = _plan(umls_path, preset="none", time_budget=1.0)[0]
    assert plan is None and "1-minute budget" in why
    monkeypatch.setattr(search_mod, "MIN_FINAL_EPOCHS", 1)
    plan, why = _plan(umls_path, preset="none", time_budget=3.0)[0]
    assert plan is None and f"of the {MIN_RUNG_EPOCHS} a search needs" in why
    assert _plan(kinship_path, preset="none", search="on")[0][0] is not None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _plan(umls_path, preset="none")[0] == (None, "2 processes (torchrun)")
    with pytest.raises(ConfigError, match="--search on runs its candidates in one process"):
        _plan(umls_path, preset="none", search="on")


def test_follow_dim_resets_the_image_only_where_the_vector_size_changes(umls_path):
    base = LinkConfig.resolve([Layer("flag", {"dataset": str(umls_path), "channels": 100,
                                              "k_h": 10, "k_w": 10, "preset": "none"})])
    assert follow_dim({"lr": 0.01}, base, ()) == {"lr": 0.01}
    assert follow_dim({"channels": 100}, base, ()) == {"channels": 100}
    assert follow_dim({"channels": 50}, base, {"kernel_size"}) == {
        "channels": 50, "k_h": None, "k_w": None}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_a_search_end_to_end(tmp_path, umls_path, monkeypatch):
    """A search on UMLS: the candidates train in search/NN without the test split, the
    survivors continue, the record and the chosen settings reach config.json, the chosen
    settings retrain in the run directory exactly as in their candidate run, resume
    continues the run (not the search), and a run directory holding a search is guarded."""
    seen = []
    real = search_mod.train_trial

    def spy(layers, **kw):
        seen.append(layers[-1].values)
        return real(layers, **kw)

    monkeypatch.setattr(search_mod, "train_trial", spy)
    out = tmp_path / "run"
    settings = dict(FAST, dataset=str(umls_path), output_dir=str(out), search="on",
                    time_budget=0.1, epochs=4)
    run = disenkg.train(**settings)
    config = json.loads((out / "config.json").read_text())
    record = config["search"]
    n = len(record["candidates"])
    assert n >= 3 and record["candidates"][0]["name"] == "size-derived"
    rows = _rows(out / "search.tsv")
    assert [int(r["candidate"]) for r in rows] == list(range(n))
    survivors = [r for r in rows if r["epochs_2"]]
    assert len(survivors) == -(-n // 3)
    # the survivors are the first rung's best (ties: the earlier)
    order = sorted(range(n), key=lambda i: (-float(rows[i]["valid_mrr_1"]), i))
    assert sorted(int(r["candidate"]) for r in survivors) == sorted(order[:len(survivors)])
    chosen = [r for r in rows if r["chosen"] == "yes"]
    assert len(chosen) == 1 and int(chosen[0]["candidate"]) == record["chosen"]
    best = max(survivors, key=lambda r: float(r["valid_mrr_2"]))
    assert float(chosen[0]["valid_mrr_2"]) == float(best["valid_mrr_2"])
    # candidates are runs trained without early stopping and never tested
    for i in range(n):
        cand = out / "search" / f"{i:02d}"
        metrics = json.loads((cand / "metrics.json").read_text())
        assert "test" not in metrics
        assert metrics["epochs_run"] == int(rows[i]["epochs_2"] or rows[i]["epochs_1"])
    assert all(v["patience"] == 0 and v["resume"] for v in seen)
    # the chosen settings: source "search", the given ones untouched, epochs as given
    win = record["candidates"][record["chosen"]]["values"]
    for key, value in win.items():
        assert config["args"][key] == value and config["sources"][key] == "search"
    for key in ("channels", "num_components", "batch_size", "epochs"):
        assert config["sources"][key] == "api"
    assert "test" in json.loads((out / "metrics.json").read_text())
    # the run retrains the chosen candidate from the same seed: the same first epochs
    cand = out / "search" / f"{record['chosen']:02d}"
    ran = [r["loss"] for r in _rows_csv(out / "history.csv")]
    there = [r["loss"] for r in _rows_csv(cand / "history.csv")][:len(ran)]
    assert ran == there
    assert run.config["args"]["search"] == "on" and run.config["search"] == record
    # resume continues the run, not the search
    seen.clear()
    disenkg.train(**settings, resume=True)
    assert seen == []
    assert json.loads((out / "config.json").read_text())["search"] == record
    # a directory holding a search is refused without --resume / --overwrite
    (out / "metrics.json").unlink()
    for name in ("config.json", "history.csv", "last.pt", "best.pt", "manifest.json",
                 "entities.tsv", "relations.tsv", "triples.pt"):
        (out / name).unlink()
    with pytest.raises(RunDirError, match="holds a search"):
        disenkg.train(**settings)
    # --overwrite with --search none removes the old search
    disenkg.train(**dict(settings, search="none", epochs=1), overwrite=True)
    assert not (out / "search").exists() and not (out / "search.tsv").exists()
    assert "search" not in json.loads((out / "config.json").read_text())


def _rows_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_candidate_that_derives_a_setting_again_continues(tmp_path, umls_path, monkeypatch):
    """A candidate whose values derive a setting again (the batch x4 candidate's ``lr =
    None``) resumes its first-rung run for the second rung (the saved derived value is not
    a changed setting); with eta = 1 every candidate continues."""
    monkeypatch.setattr(search_mod, "ETA", 1)
    layers = [Layer("api", dict(FAST, dataset=str(umls_path), output_dir=str(tmp_path / "r"),
                                search="on"), "test")]
    config, run_dir = prepare_run(layers)
    ds = KGDataset.load(str(umls_path))
    plan = SearchPlan([Candidate("size-derived"), Candidate("derive", {"lr": None}),
                       Candidate("lr x3", {"lr": 0.009})], [1.0, 1.0, 1.0], 1.0, 10.0, "test")
    winner, record = run_search(plan, layers, config, run_dir, ds)
    for c in record["candidates"]:
        assert (c["epochs_1"], c["epochs_2"]) == (1, 2) and c["valid_mrr_2"] is not None
    saved = json.loads((tmp_path / "r" / "search" / "01" / "config.json").read_text())
    assert saved["args"]["lr"] == 0.003 and saved["sources"]["lr"] == "derived"
