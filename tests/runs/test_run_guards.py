"""Runs are not lost, clobbered, mixed or silently altered (issue 31): resume without
last.pt, a second process on one directory, --overwrite only once the new run has its data,
exports into the run directory, non-finite weights, stale plots and logs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import disenkg
from disenkg.cli.link import main as link_main
from disenkg.errors import CheckpointError, RunDirError, UserError
from disenkg.runs.rundir import RunDir
from tests.conftest import REPO, kg_archive

FIXTURE = REPO / "tests" / "fixtures" / "runs_0_1_0" / "umls-disenkgat"


def hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def run_copy(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(FIXTURE, d)
    return d


def small(out) -> list[str]:
    return ["--dataset", str(kg_archive("umls")), "--preset", "none", "--epochs", "1",
            "--channels", "20", "--k-h", "5", "--k-w", "4", "--num-filters", "4",
            "--kernel-size", "3", "--init-dim", "8", "--batch-size", "256", "--no-progress",
            "--output-dir", str(out)]


def test_resume_without_last_pt_is_refused_and_nothing_changes(run_copy):
    (run_copy / "last.pt").unlink()
    before = hashes(run_copy)
    with pytest.raises(RunDirError, match="no last.pt; a resumed run would start afresh"):
        link_main(["--resume", "--output-dir", str(run_copy), "--dataset",
                   str(kg_archive("umls")), "--no-progress"])
    assert hashes(run_copy) == before


def test_overwrite_with_bad_data_keeps_the_old_run(run_copy, tmp_path):
    before = hashes(run_copy)
    bad = tmp_path / "kg"
    bad.mkdir()
    for split in ("train", "valid", "test"):
        (bad / f"{split}.txt").write_text("a\tr\n")  # two fields: refused when read
    argv = small(run_copy)
    argv[argv.index("--dataset") + 1] = str(bad)
    with pytest.raises(UserError, match="expected 3 tab-separated fields"):
        link_main([*argv, "--overwrite"])
    assert hashes(run_copy) == before  # the old run is intact


def test_overwrite_removes_the_old_runs_plots_and_logs(run_copy):
    (run_copy / "curves.png").write_bytes(b"old")
    (run_copy / "tensorboard").mkdir()
    (run_copy / "tensorboard" / "events").write_bytes(b"old")
    link_main([*small(run_copy), "--overwrite"])
    assert not (run_copy / "curves.png").exists() and not (run_copy / "tensorboard").exists()
    assert json.loads((run_copy / "config.json").read_text())["package_version"] == \
        disenkg.__version__


def test_a_second_process_cannot_write_a_locked_run_directory(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from disenkg.runs.rundir import RunDir; "
         f"RunDir({str(out)!r}).prepare(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"{out} is in use by process {holder.pid}"):
            RunDir(out).prepare()
    finally:
        holder.kill()
        holder.wait()
    RunDir(out).prepare()  # the lock died with its process: no stale lock
    RunDir(out).unlock()


def test_export_into_the_run_directory_is_refused(run_copy):
    from disenkg.run import main as run_main

    before = hashes(run_copy)
    assert run_main(["export", "--run-dir", str(run_copy), "--out", str(run_copy)]) == 2
    assert hashes(run_copy) == before
    assert disenkg.load_run(run_copy).predict_tails(
        disenkg.load_run(run_copy).dataset.entities[0],
        disenkg.load_run(run_copy).dataset.relations[0], k=1)


def test_non_finite_weights_are_refused_when_loading(run_copy):
    state = torch.load(run_copy / "best.pt", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name].clone().fill_(float("nan"))
    torch.save(state, run_copy / "best.pt")
    with pytest.raises(CheckpointError, match=rf"non-finite weights \(NaN or inf\) in "
                                              rf"\['{name}'"):
        disenkg.load_run(run_copy)
    disenkg.load_run(run_copy, checkpoint="last")  # the other checkpoint still serves


def test_resume_with_the_runs_own_command_is_accepted(tmp_path):
    out = tmp_path / "o"
    link_main(small(out))
    m = link_main([*small(out), "--resume", "--epochs", "2"])
    assert m["epochs_run"] == 2


def test_predict_and_score_in_batches_equal_one_batch(monkeypatch):
    import disenkg.runs.trained as tr

    run = disenkg.load_run(FIXTURE)
    ds = run.dataset
    queries = [(ds.entities[h], ds.relations[r], None) for h, r, _ in ds.test[:7].tolist()]
    queries += [(None, ds.relations[r], ds.entities[t]) for _, r, t in ds.test[7:12].tolist()]
    triples = [(ds.entities[h], ds.relations[r], ds.entities[t])
               for h, r, t in ds.test[:11].tolist()]
    whole_p, whole_s = run.predict(queries, k=4), run.score(triples)
    monkeypatch.setattr(tr, "QUERY_BATCH", 3)
    got_p, got_s = run.predict(queries, k=4), run.score(triples)
    # the same answers; scores to float32 rounding (a GEMM's blocking depends on the batch)
    assert [[a["entity"] for a in q] for q in got_p] == \
        [[a["entity"] for a in q] for q in whole_p]
    for g, w in zip(got_p + [got_s], whole_p + [whole_s]):
        assert [a["score"] for a in g] == pytest.approx([a["score"] for a in w], rel=1e-5)


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh") / "run"
    link_main(small(out))
    return out


@pytest.mark.parametrize("edit", ["swap_entities", "config_scorer", "triples"])
def test_edited_run_files_are_refused_naming_the_file(fresh_run, tmp_path, edit):
    d = tmp_path / "r"
    shutil.copytree(fresh_run, d, ignore=shutil.ignore_patterns(".lock"))
    if edit == "swap_entities":
        lines = (d / "entities.tsv").read_text().splitlines()
        a, b = lines[0].split("\t"), lines[1].split("\t")
        lines[0], lines[1] = f"{a[0]}\t{b[1]}", f"{b[0]}\t{a[1]}"
        (d / "entities.tsv").write_text("\n".join(lines) + "\n")
        what = "entities.tsv"
    elif edit == "config_scorer":
        cfg = json.loads((d / "config.json").read_text())
        cfg["args"]["composition"] = "sub"
        (d / "config.json").write_text(json.dumps(cfg))
        what = r"config.json \(identity\)"
    else:
        t = torch.load(d / "triples.pt", weights_only=True)
        t["test"] = t["test"].flip(0)
        torch.save(t, d / "triples.pt")
        what = "triples.pt"
    with pytest.raises(RunDirError, match=rf"{what} changed since the run was written"):
        disenkg.load_run(d)
    with pytest.raises(RunDirError, match=rf"{what} changed"):
        link_main(["--resume", "--output-dir", str(d), "--dataset", str(kg_archive("umls")),
                   "--no-progress"])


def test_a_safe_change_keeps_the_run_usable_and_a_missing_config_is_refused(fresh_run,
                                                                            tmp_path):
    d = tmp_path / "r"
    shutil.copytree(fresh_run, d, ignore=shutil.ignore_patterns(".lock"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["args"]["epochs"] = 5  # what a resume may change is not the run's identity
    (d / "config.json").write_text(json.dumps(cfg))
    disenkg.load_run(d)
    (d / "config.json").unlink()
    with pytest.raises(RunDirError, match="has no config.json"):
        link_main(["--resume", "--output-dir", str(d), "--dataset", str(kg_archive("umls")),
                   "--lr", "0.5", "--no-progress"])


def test_a_checkpoint_of_another_run_is_refused(fresh_run, tmp_path):
    other = tmp_path / "other"
    link_main([*small(other), "--seed", "5", "--label-smoothing", "0.2"])
    d = tmp_path / "r"
    shutil.copytree(fresh_run, d, ignore=shutil.ignore_patterns(".lock"))
    shutil.copy(other / "best.pt", d / "best.pt")
    with pytest.raises(RunDirError, match="best.pt was written by another run"):
        disenkg.load_run(d)


def test_wrong_types_and_damaged_files_are_named(run_copy):
    run = disenkg.load_run(run_copy)
    rel = run.dataset.relations[0]
    with pytest.raises(UserError, match="entity: expected a name \\(str\\), got int 3"):
        run.predict_tails(3, rel)
    with pytest.raises(UserError, match="relation: expected a name \\(str\\), got NoneType"):
        run.predict_tails(run.dataset.entities[0], None)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got '3'"):
        run.predict_tails(run.dataset.entities[0], rel, k="3")
    cfg = json.loads((run_copy / "config.json").read_text())
    del cfg["args"]
    (run_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunDirError, match="config.json is damaged: expected a 'model'"):
        disenkg.load_run(run_copy)


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from disenkg.utils import io

    target = tmp_path / "last.pt"
    io.atomic_save({"a": torch.ones(2)}, target)
    before = target.read_bytes()

    def full(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(io.torch, "save", full)
    with pytest.raises(RunDirError, match=r"cannot write .*last.pt: \[enforce fail .* MiB "
                                          r"free on its file system\); the previous last.pt "
                                          r"is unchanged"):
        io.atomic_save({"a": torch.zeros(2)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(RunDirError, match="cannot write .*file/x.json: "):
        io.atomic_write_text("{}", f / "x.json")


def test_a_name_with_a_unicode_line_separator_survives_the_run_directory(tmp_path):
    d = tmp_path / "kg"
    d.mkdir()
    odd = "x\u2028y\x1cz"
    rows = [(f"e{i}", "r", f"e{i + 1}") for i in range(12)] + [("e0", "s", odd)]
    (d / "train.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    (d / "valid.txt").write_text("e1\ts\te3\n")
    (d / "test.txt").write_text(f"e2\ts\t{odd}\n")
    out = tmp_path / "o"
    link_main(["--dataset", str(d), "--model", "conve", "--epochs", "1", "--no-progress",
               "--output-dir", str(out)])
    run = disenkg.load_run(out)
    assert odd in run.dataset.entities
    assert run.predict_tails(odd, "s", k=2, filter="none")
