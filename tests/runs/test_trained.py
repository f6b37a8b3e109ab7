"""Run directories and trained-model use: predict, score, evaluate, export, inspect, plot;
safe checkpoints; guarded resume and output directories (issue: trained models people can
use and trust)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import disenkg
from disenkg.cli.link import main as link_main
from disenkg.errors import CheckpointError, ConfigError, RunDirError, UserError
from disenkg.evaluation import LinkEvaluator
from disenkg.runs.checkpoint import load_checkpoint
from disenkg.runs.rundir import HISTORY_COLUMNS, RUN_FILES
from tests.conftest import REPO, cli_here

SMALL = ["--epochs", "2", "--no-progress", "--channels", "20", "--k-h", "5", "--k-w", "4",
         "--num-filters", "4", "--kernel-size", "3", "--batch-size", "256", "--init-dim", "16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import kg_archive

    out = tmp_path_factory.mktemp("run") / "umls"
    return disenkg.train(dataset=str(kg_archive("umls")), epochs=3, no_progress=True,
                         channels=20, k_h=5, k_w=4, num_filters=4, kernel_size=3,
                         batch_size=256, init_dim=16, lr=0.01, output_dir=str(out))


def test_run_directory_is_complete_and_safe(run):
    d = run.run_dir.path
    assert set(RUN_FILES) <= {p.name for p in d.iterdir()}
    for name in ("best.pt", "last.pt", "triples.pt"):
        torch.load(d / name, weights_only=True)  # raises if anything is pickled
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["package_version"] == disenkg.__version__
    assert cfg["args"]["lr"] == 0.01 and cfg["args"]["batch_size"] == 256
    assert set(cfg["dataset"]["fingerprint"]) == {"train", "valid", "test"}
    ents = (d / "entities.tsv").read_text().splitlines()
    assert ents[0].split("\t")[0] == "0" and len(ents) == run.dataset.num_entities
    lines = (d / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == list(HISTORY_COLUMNS) and len(lines) == 4
    rows = run.run_dir.read_history()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["valid_mrr"] for r in rows)


def test_predict_top1_equals_the_evaluators_score(run):
    ds = run.dataset
    h, r, t = ds.test[0].tolist()
    top = run.predict_tails(ds.entities[h], ds.relations[r], k=5)
    assert len(top) == 5 and all(x["entity"] in ds.entities for x in top)
    assert not any(x["known"] for x in top)
    captured = []
    real = run.model.score

    def spy(reps, heads, rels):
        out = real(reps, heads, rels)
        captured.append(out.detach().clone())
        return out

    run.model.score = spy
    try:
        ev = LinkEvaluator(filter_index=ds.filter_index(), progress=False)
        ev.evaluate(run.model, ds.test[:1])
    finally:
        del run.model.score
    row = captured[0][0].float()  # the tail direction of the first test triple
    kr, kc = ds.filter_index().lookup(torch.tensor([h]), torch.tensor([r]))
    row[kc] = float("-inf")
    assert top[0]["score"] == pytest.approx(float(row.max()), abs=1e-6)
    assert top[0]["entity"] == ds.entities[int(row.argmax())]


def test_filter_known_removes_known_answers_and_none_marks_them(run):
    ds = run.dataset
    h, r, t = ds.train[0].tolist()
    kr, kc = ds.filter_index().lookup(torch.tensor([h]), torch.tensor([r]))
    known = {ds.entities[i] for i in kc.tolist()}
    filtered = run.predict_tails(ds.entities[h], ds.relations[r], k=ds.num_entities)
    assert not known & {x["entity"] for x in filtered}
    assert len(filtered) == ds.num_entities - len(known)
    full = run.predict_tails(ds.entities[h], ds.relations[r], k=ds.num_entities, filter="none")
    assert {x["entity"] for x in full if x["known"]} == known
    heads = run.predict_heads(ds.entities[t], ds.relations[r], k=3, filter="none")
    assert len(heads) == 3


def test_score_agrees_with_predict(run):
    ds = run.dataset
    h, r, _ = ds.valid[3].tolist()
    top = run.predict_tails(ds.entities[h], ds.relations[r], k=4, filter="none")
    scored = run.score([(ds.entities[h], ds.relations[r], x["entity"]) for x in top])
    for p, s in zip(top, scored):
        assert s["score"] == pytest.approx(p["score"], abs=1e-6)
        assert s["probability"] == pytest.approx(p["probability"], abs=1e-6)
        assert 0 < s["probability"] < 1


def test_unknown_names_suggest_the_closest(run):
    with pytest.raises(UserError, match="unknown entity 'acquired_abnormalty'; closest: "
                                        "acquired_abnormality"):
        run.predict_tails("acquired_abnormalty", "location_of")
    with pytest.raises(UserError, match="unknown relation 'locaton_of'; closest: location_of"):
        run.predict_tails("cell", "locaton_of")
    with pytest.raises(UserError, match=r"unknown entity 'qqqqqqqq' \(the run has 135 entities\)"):
        run.predict_tails("qqqqqqqq", "location_of")


def test_evaluate_reproduces_metrics_json(run):
    m = run.run_dir.read_metrics()
    for split in ("valid", "test"):
        again = run.evaluate(split)
        for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
            assert again[key] == pytest.approx(m[split][key], abs=1e-12), (split, key)


def test_evaluate_on_a_named_triples_file(run, tmp_path):
    ds = run.dataset
    f = tmp_path / "t.tsv"
    f.write_text("".join(f"{ds.entities[h]}\t{ds.relations[r]}\t{ds.entities[t]}\n"
                         for h, r, t in ds.test[:20].tolist()))
    m = run.evaluate(f)
    assert m["mrr"] == pytest.approx(run.evaluate("test")["mrr"], abs=1) and 0 < m["mrr"] <= 1
    (tmp_path / "bad.tsv").write_text("cell\tnope\tcell\n")
    with pytest.raises(UserError, match=r"bad.tsv triple 1: unknown relation 'nope'"):
        run.evaluate(tmp_path / "bad.tsv")


def test_export_round_trips(run, tmp_path):
    from disenkg.cli.use import export_embeddings

    export_embeddings(run, tmp_path)
    emb = run.embeddings()
    ent = np.load(tmp_path / "entity_embeddings.npy", allow_pickle=False)
    np.testing.assert_array_equal(ent, emb["entity"])
    assert ent.shape == (run.dataset.num_entities, 3, 20)
    rel = np.load(tmp_path / "relation_embeddings.npy", allow_pickle=False)
    np.testing.assert_array_equal(rel, emb["relation"])
    names = (tmp_path / "entities.tsv").read_text().splitlines()
    assert names == run.dataset.entities
    rels = (tmp_path / "relations.tsv").read_text().splitlines()
    assert rels[0] == "relation\tdirection"
    assert rels[1 + run.dataset.num_relations] == run.dataset.relations[0] + "\tinverse"
    assert rels[1] == run.dataset.relations[0] + "\tforward"
    vec = np.loadtxt(tmp_path / "entity_vectors_component1.tsv", delimiter="\t")
    np.testing.assert_allclose(vec, ent[:, 1], rtol=1e-5, atol=1e-6)


def test_component_attention_and_neighbours(run):
    att = run.component_attention()
    used = ~np.isnan(att).all(1)
    assert att.shape == (2 * run.dataset.num_relations, 3) and used.any()
    np.testing.assert_allclose(att[used].sum(1), 1.0, rtol=1e-5)
    ds = run.dataset
    h, r, t = ds.train[0].tolist()
    rows = run.neighbours(ds.entities[h])
    triples = {row["triple"] for row in rows}
    assert (ds.entities[h], ds.relations[r], ds.entities[t]) in triples
    assert any(row["relation"] == "(self)" for row in rows)
    # per component, the attention over an entity's incoming edges sums to one
    np.testing.assert_allclose(np.array([row["attention"] for row in rows]).sum(0), 1.0,
                               rtol=1e-4)


def test_plot_writes_pngs(run, tmp_path):
    pytest.importorskip("matplotlib")
    from disenkg.runs.plot import plot_run

    paths = plot_run(run.run_dir.path, tmp_path)
    assert {p.name for p in paths} == {"curves.png", "component_attention.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_optional_extras_fail_clearly(monkeypatch, tmp_path):
    import importlib.util

    from disenkg.runs import plot, tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in ("matplotlib", "tensorboard", "triton")
                        else real(n, *a))
    with pytest.raises(ConfigError, match="plot needs matplotlib") as e:
        plot.plot_run(tmp_path)
    assert "disenkg[plot]" in e.value.hint
    with pytest.raises(ConfigError, match="--tensorboard needs the tensorboard package"):
        tracking.check_tracking(True)
    from disenkg.ops.mixture_bce import mixture_bce

    q, e = torch.randn(2, 1, 3), torch.randn(4, 1, 3)
    with pytest.raises(ValueError, match=r"impl='triton' needs the 'triton' package "
                                         r"\(pip install disenkg\[triton\]\)"):
        mixture_bce(q, e, torch.zeros(2, 1), torch.zeros(2, 4), impl="triton")


def test_extras_match_what_the_code_imports():
    """Each optional extra of pyproject.toml has code behind it, and nothing else."""
    import tomllib

    from tests.conftest import REPO

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras) == {"triton", "plot", "tracking", "parquet", "tune", "docs", "dev"}
    assert extras["plot"] == ["matplotlib>=3.5"] and extras["tracking"] == ["tensorboard>=2.10"]
    assert extras["parquet"] == ["pyarrow>=10"]
    assert "import pyarrow" in (REPO / "disenkg" / "runs" / "complete.py").read_text()
    assert extras["tune"] == ["optuna>=4.0"]
    assert "mkdocstrings" in (REPO / "mkdocs.yml").read_text() and any(
        d.startswith("mkdocstrings-python") for d in extras["docs"])
    assert "import optuna" in (REPO / "disenkg" / "hpo" / "study.py").read_text()
    dev = " ".join(extras["dev"])
    for need in ("pytest", "ruff", "matplotlib", "tensorboard", "triton", "pyarrow", "optuna"):
        assert need in dev, need


# ---------------------------------------------------------------------- checkpoints
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "last.pt"
    torch.save({"model": _Payload(str(marker))}, bad)
    with pytest.raises(CheckpointError, match="not safe to load"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_planted_checkpoint_on_resume_is_refused(run, tmp_path):
    import shutil

    d = tmp_path / "planted"
    shutil.copytree(run.run_dir.path, d)
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(str(marker))}, d / "last.pt")
    with pytest.raises(CheckpointError, match=r"last.pt holds objects that are not safe"):
        link_main(["--resume", "--output-dir", str(d), "--epochs", "4"])
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage, run):
    p = tmp_path / "best.pt"
    data = (run.run_dir.path / "best.pt").read_bytes()
    p.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"checkpoint {p} is corrupt or truncated"):
        load_checkpoint(p)


def test_missing_best_is_an_error(run, tmp_path):
    import shutil

    d = tmp_path / "nobest"
    shutil.copytree(run.run_dir.path, d)
    (d / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="best.pt is missing"):
        link_main(["--resume", "--output-dir", str(d)])  # already finished: goes to finish()


# ---------------------------------------------------------------------- resume and guards
@pytest.fixture
def user_run(tmp_path):
    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    out = tmp_path / "run"
    link_main(["--dataset", str(kg), "--output-dir", str(out), *SMALL])
    return kg, out


def test_resume_alone_continues_with_changed_epochs(user_run):
    kg, out = user_run
    m = link_main(["--resume", "--output-dir", str(out), "--epochs", "3", "--no-progress"])
    assert m["epochs_run"] == 3
    hist = (out / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in hist[1:]] == ["1", "2", "3"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["args"]["epochs"] == 3 and cfg["args"]["channels"] == 20


def test_run_of_the_old_impl_flags_loads_and_resumes(user_run):
    """A run saved with the flags before the one implementation vocabulary (``impl=torch``,
    ``conv_impl=naive``, ``image_chunk=0``) is read under today's names: it predicts,
    and resumes with a changed encoder implementation."""
    from disenkg.runs.trained import TrainedRun

    _, out = user_run
    cfg = json.loads((out / "config.json").read_text())
    args = cfg["args"]
    for new in ("loss_impl", "encoder_impl", "head_impl"):
        del args[new]
    args.update(impl="torch", conv_impl="naive", image_chunk=0)
    (out / "config.json").write_text(json.dumps(cfg))
    run = TrainedRun.load(out)
    assert run.config["args"]["loss_impl"] == "eager"
    assert run.config["args"]["encoder_impl"] == "eager"
    assert run.config["args"]["head_impl"] == "eager" and run.config["args"]["image_chunk"] == 256
    h, r, _ = run.dataset.test[0].tolist()
    assert len(run.predict_tails(run.dataset.entities[h], run.dataset.relations[r], k=3)) == 3
    m = link_main(["--resume", "--output-dir", str(out), "--epochs", "3", "--no-progress",
                   "--encoder-impl", "chunked"])
    assert m["epochs_run"] == 3 and m["config"]["encoder_impl"] == "chunked"


@pytest.mark.parametrize("flags,key", [(["--channels", "40", "--k-h", "8", "--k-w", "5"],
                                        "channels"),
                                       (["--lr", "0.5"], "lr"),
                                       (["--seed", "3"], "seed"),
                                       (["--label-smoothing", "0.2"], "label_smoothing")])
def test_resume_with_a_changed_setting_raises_naming_it(user_run, flags, key):
    _, out = user_run
    with pytest.raises(ConfigError, match=rf"cannot resume .*{key}: .* in the run, .* now"):
        link_main(["--resume", "--output-dir", str(out), "--epochs", "3", *flags])


def test_resume_on_another_dataset_raises(user_run, tmp_path):
    kg, out = user_run
    other = tmp_path / "other"
    other.mkdir()
    for f in ("train", "valid", "test"):
        text = (kg / f"{f}.txt").read_text().splitlines()
        (other / f"{f}.txt").write_text("\n".join(reversed(text)) + "\n")  # same size
    with pytest.raises(CheckpointError, match=r"differs from the one the run was trained on"):
        link_main(["--resume", "--output-dir", str(out), "--epochs", "3",
                   "--dataset", str(other)])


def test_second_run_into_a_used_directory_is_refused(user_run):
    kg, out = user_run
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run") as e:
        link_main(["--dataset", str(kg), "--output-dir", str(out), *SMALL])
    assert "--overwrite" in e.value.hint
    assert (out / "metrics.json").read_bytes() == before
    m = link_main(["--dataset", str(kg), "--output-dir", str(out), "--overwrite", *SMALL,
                   "--seed", "1"])
    assert m["config"]["seed"] == 1


def test_output_dir_that_is_a_file_fails_before_training(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        link_main(["--dataset", "no-such-dataset", "--output-dir", str(f)])


# ---------------------------------------------------------------------- CLI end to end
def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m disenkg.run ARGS`` in a fresh process (what a user runs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "disenkg.run", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_cli_predict_score_evaluate(run, tmp_path):
    d = str(run.run_dir.path)
    ds = run.dataset
    h, r, _ = ds.test[0].tolist()
    p = cli_here("predict", "--run-dir", d, "--head", ds.entities[h], "--relation",
             ds.relations[r], "--top-k", "3", "--format", "json")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got[0] == run.predict_tails(ds.entities[h], ds.relations[r], k=3)
    q = tmp_path / "q.tsv"
    q.write_text(f"{ds.entities[h]}\t{ds.relations[r]}\t?\n?\t{ds.relations[r]}\t"
                 f"{ds.entities[h]}\n")
    p = cli_here("predict", "--run-dir", d, "--queries", str(q), "--format", "tsv", "--top-k", "2")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1 + 4
    t = tmp_path / "t.tsv"
    t.write_text(f"{ds.entities[h]}\t{ds.relations[r]}\t{got[0][0]['entity']}\n")
    p = cli_here("score", "--run-dir", d, "--triples", str(t), "--format", "json")
    assert json.loads(p.stdout)[0]["probability"] == pytest.approx(got[0][0]["probability"])
    p = cli_here("evaluate", "--run-dir", d, "--json", "--no-progress")
    assert json.loads(p.stdout)["mrr"] == pytest.approx(run.run_dir.read_metrics()["test"]["mrr"])
    p = cli_here("predict", "--run-dir", d, "--head", "cel", "--relation", ds.relations[r])
    assert p.returncode == 2 and p.stderr.startswith("error: unknown entity 'cel'; closest:")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", ["predict", "score", "evaluate", "export", "inspect",
                                     "plot"])
def test_every_use_command_has_help_for_every_flag(command):
    from disenkg.cli.use import build_parser

    parser = build_parser(command)
    for action in parser._actions:
        assert action.help, f"{command}: flag {action.option_strings} has no help text"


def test_missing_run_dir_is_one_line(tmp_path):
    p = _cli("predict", "--run-dir", str(tmp_path / "nope"), "--head", "a", "--relation", "b")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "run directory" in p.stderr and str(tmp_path / "nope") in p.stderr


def test_train_api_returns_a_usable_run(run):
    assert isinstance(run, disenkg.api.TrainedRun) or type(run).__name__ == "TrainedRun"
    assert repr(run).startswith("TrainedRun(")
    assert Path(run.run_dir.path).is_dir()


def test_checkpoint_writer_rejects_unsafe_objects(tmp_path):
    from disenkg.runs.checkpoint import save_checkpoint

    with pytest.raises(TypeError, match=r"checkpoint\['x'\] is a _Payload"):
        save_checkpoint({"x": _Payload("m")}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
    save_checkpoint({"a": [1, 2.0, "s", None, torch.ones(2)], "b": {"c": (1, 2)}},
                    tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["b"]["c"] == (1, 2)


def test_tensorboard_logs_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    out = tmp_path / "run"
    link_main(["--dataset", str(kg), "--output-dir", str(out), "--tensorboard", *SMALL])
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "mi_loss", "valid/mrr", "valid/hits@10", "seconds"} <= tags
    assert [e.step for e in acc.Scalars("valid/mrr")] == [1, 2]


def test_log_lines_go_above_progress_bars(tmp_path, capfd):
    """With progress bars on, log records are written through tqdm, not into a bar."""
    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    flags = [f for f in SMALL if f != "--no-progress"]
    link_main(["--dataset", str(kg), "--output-dir", str(tmp_path / "o"), *flags])
    err = capfd.readouterr().err
    records = [line for line in err.split("\n") if "valid MRR" in line]
    assert len(records) == 2
    for line in records:
        # tqdm.write clears the line the cursor is on ("\r   \r") before the record; a
        # plain handler writes it wherever the last bar left the cursor
        prefix = line[:line.index("20")]
        assert prefix == "" or prefix.endswith(" \r"), repr(prefix[-80:])
        assert prefix.replace("\x1b[A", "").strip(" \r") == "", repr(prefix[-80:])


def test_cli_export_inspect_plot(run, tmp_path):
    d = str(run.run_dir.path)
    p = cli_here("export", "--run-dir", d, "--out", str(tmp_path / "x"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "x" / "entity_embeddings.npy").exists()
    ent = run.dataset.entities[run.dataset.train[0, 0]]
    p = cli_here("inspect", "--run-dir", d, "--entity", ent, "--top", "3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("component attention per relation")
    assert f"edges into {ent}" in p.stdout
    p = cli_here("plot", "--run-dir", d, "--out", str(tmp_path / "png"))
    if p.returncode == 0:
        assert (tmp_path / "png" / "curves.png").exists()
    else:  # matplotlib missing: one clear line
        assert "plot needs matplotlib" in p.stderr and p.returncode == 2


def test_queries_file_errors_are_named(run, tmp_path):
    q = tmp_path / "q.tsv"
    q.write_text("cell\tpart_of\tcell\n")
    p = cli_here("predict", "--run-dir", str(run.run_dir.path), "--queries", str(q))
    assert p.returncode == 2
    assert "q.tsv query 1 (cell, part_of, cell): put '?' in exactly one" in p.stderr


def test_inspect_needs_a_disenkgat_run(tmp_path):
    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    out = tmp_path / "conve"
    link_main(["--dataset", str(kg), "--model", "conve", "--output-dir", str(out),
               "--epochs", "1", "--no-progress"])
    conve = disenkg.load_run(out)
    assert conve.predict_tails("e1", "rel0", k=2)  # prediction works for any model
    with pytest.raises(UserError, match="component attention needs a DisenKGAT run"):
        conve.component_attention()
