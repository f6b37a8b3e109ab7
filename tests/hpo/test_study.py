"""The search end to end on UMLS with a tiny model: trials as run directories, the best one
tested (and only it), resume, failing, pruned and interrupted trials, the report."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import sys

import pytest

optuna = pytest.importorskip("optuna")

import disenkg  # noqa: E402
from disenkg.config.toml import read_toml  # noqa: E402
from disenkg.errors import ConfigError, UserError  # noqa: E402
from disenkg.hpo import study as study_mod  # noqa: E402
from disenkg.pipeline import trial as trial_mod  # noqa: E402
from disenkg.pipeline.config import Layer, LinkConfig  # noqa: E402

#: a model small enough for a trial of two epochs in about a second
FAST = dict(epochs=2, init_dim=16, channels=16, k_h=4, k_w=4, num_filters=8, kernel_size=3,
            num_components=2, batch_size=512, no_progress=True, preset="none",
            log_level="WARNING")


def _tune(tmp_path, umls_path, **kw):
    settings = {**FAST, **kw}
    return disenkg.tune(dataset=str(umls_path), output_dir=str(tmp_path / "study"), **settings)


def _rows(out) -> list[dict]:
    with open(out / "trials.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _flaky(monkeypatch, fail, exc=None):
    """Trials whose number is in ``fail`` raise ``exc`` after their first epoch."""
    exc = exc if exc is not None else FloatingPointError("non-finite training loss nan")
    real = trial_mod.train_link

    def train(config, run_dir, **kw):
        if int(run_dir.path.name) in fail:
            def boom(row):
                raise exc
            kw["callbacks"] = [boom, *kw.get("callbacks", [])]
        return real(config, run_dir, **kw)

    monkeypatch.setattr(trial_mod, "train_link", train)


def _unlocked(path) -> bool:
    with open(path / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def test_trials_are_runs_and_only_the_best_is_tested(tmp_path, umls_path):
    result = _tune(tmp_path, umls_path, trials=3, pruner="none")
    out = tmp_path / "study"
    assert result.counts() == {"COMPLETE": 3}
    values = {t.number: t.value for t in result.study.trials}
    assert result.best_number == max(values, key=values.get)
    for n in range(3):
        run = out / "trials" / str(n)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["valid"]["mrr"] == pytest.approx(values[n])
        assert ("test" in metrics) == (n == result.best_number)  # the test split: best only
        saved = json.loads((run / "config.json").read_text())
        params = result.study.trials[n].params
        for k, v in params.items():
            assert saved["args"][k] == pytest.approx(v) and saved["sources"][k] == "tune"
        assert saved["sources"]["epochs"] == "api"  # fixed for every trial
        assert _unlocked(run)
    # the first trial is what the plain command would train (size-derived here)
    base = result.study.trials[0]
    assert base.user_attrs["baseline"] and base.params["lr"] == 0.003
    assert base.params["label_smoothing"] == 0.1 and base.params["attention_dropout"] == 0.4
    assert os.readlink(out / "best") == f"trials/{result.best_number}"
    run = disenkg.load_run(out / "best")
    assert run.evaluate("test")["mrr"] == pytest.approx(result.best_test["mrr"])
    # best.toml trains the best configuration again
    again = LinkConfig.resolve([Layer("config", read_toml(out / "best.toml"), "best.toml")])
    best_args = json.loads((out / "best" / "config.json").read_text())["args"]
    flat = again.flat()
    for k, v in best_args.items():
        if k in flat and k != "output_dir":
            assert flat[k] == v, k
    assert flat["output_dir"] is None
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert float(rows[1]["valid_mrr"]) == pytest.approx(values[1], rel=1e-5)
    assert rows[0]["baseline"] == "True" and rows[2]["run_dir"] == "trials/2"
    assert (out / "optimization_history.png").stat().st_size > 1000
    assert (out / "param_importances.png").stat().st_size > 1000


def test_rerunning_resumes_and_other_settings_are_refused(tmp_path, umls_path, capsys):
    from disenkg.run import main

    args = ["tune", "--dataset", str(umls_path), "--output-dir", str(tmp_path / "study"),
            "--epochs", "2", "--init-dim", "16", "--channels", "16", "--k-h", "4", "--k-w", "4",
            "--num-filters", "8",
            "--kernel-size", "3", "--num-components", "2", "--batch-size", "512",
            "--no-progress", "--preset", "none", "--log-level", "WARNING", "--pruner", "none"]
    assert main([*args, "--trials", "2"]) == 0
    assert main([*args, "--trials", "3"]) == 0  # one more
    assert main([*args, "--trials", "3"]) == 0  # nothing left to do
    out = capsys.readouterr().out
    assert "3 complete" in out and "best trial" in out
    study = optuna.load_study(study_name="umls-disenkgat",
                              storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert len(study.trials) == 3
    assert sorted(os.listdir(tmp_path / "study" / "trials")) == ["0", "1", "2"]
    # a different fixed setting is another study
    assert main([*args[:-2], "--trials", "4", "--pruner", "none", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "was started with other settings" in err and "lr" in err
    assert len(study.trials) == 3


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, umls_path,
                                                           monkeypatch):
    _flaky(monkeypatch, fail={1})
    result = _tune(tmp_path, umls_path, trials=3, pruner="none")
    assert result.counts() == {"COMPLETE": 2, "FAIL": 1}
    rows = _rows(tmp_path / "study")
    assert rows[1]["state"] == "FAIL"
    assert rows[1]["error"] == "FloatingPointError: non-finite training loss nan"
    assert _unlocked(tmp_path / "study" / "trials" / "1")
    assert result.best_number in (0, 2)


def test_failures_in_a_row_stop_the_worker(tmp_path, umls_path, monkeypatch):
    _flaky(monkeypatch, fail=set(range(10)), exc=MemoryError("out of memory"))
    with pytest.raises(UserError, match="2 trials in a row failed; the last: MemoryError"):
        _tune(tmp_path, umls_path, trials=6, max_failures=2)
    rows = _rows(tmp_path / "study")
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]


def test_pruned_trials_stop_early_and_stay_resumable(tmp_path, umls_path, monkeypatch):
    monkeypatch.setattr(study_mod, "make_pruner",
                        lambda name, warmup: optuna.pruners.ThresholdPruner(lower=0.99))
    result = _tune(tmp_path, umls_path, trials=2, epochs=3)
    assert result.counts() == {"PRUNED": 2} and result.best_number is None
    run = tmp_path / "study" / "trials" / "0"
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 2  # the header and epoch 1
    assert (run / "last.pt").exists() and not (run / "metrics.json").exists()
    assert _unlocked(run)
    assert not (tmp_path / "study" / "best").exists()
    # a pruned trial's run directory can be continued like any run
    resumed = disenkg.train(output_dir=str(run), resume=True, epochs=2,
                            no_progress=True, log_level="WARNING")
    assert resumed.config["args"]["epochs"] == 2


def test_interrupt_leaves_a_consistent_study(tmp_path, umls_path, monkeypatch):
    _flaky(monkeypatch, fail={1}, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, umls_path, trials=3, pruner="none")
    rows = _rows(tmp_path / "study")
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL"]
    assert _unlocked(tmp_path / "study" / "trials" / "1")
    assert result_attrs(tmp_path)[1] == {"error": "interrupted (Ctrl-C)", "interrupted": True,
                                         "run_dir": "trials/1"}
    monkeypatch.undo()
    result = _tune(tmp_path, umls_path, trials=3, pruner="none")
    # the interrupted trial is not a result: three more finish besides it
    assert result.counts() == {"COMPLETE": 3, "FAIL": 1}


def result_attrs(tmp_path) -> dict:
    study = optuna.load_study(study_name="umls-disenkgat",
                              storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    return {t.number: t.user_attrs for t in study.trials}


def test_trials_of_another_study_are_not_mixed(tmp_path, umls_path):
    (tmp_path / "study" / "trials" / "0").mkdir(parents=True)
    with pytest.raises(UserError, match="already holds trials"):
        _tune(tmp_path, umls_path, trials=1)


@pytest.mark.parametrize("flag", ["resume", "overwrite"])
def test_resume_and_overwrite_do_not_apply(tmp_path, umls_path, flag):
    with pytest.raises(ConfigError, match=f"--{flag} does not apply to tune"):
        _tune(tmp_path, umls_path, trials=1, **{flag: True})


def test_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match="optuna") as err:
        study_mod.require_optuna()
    assert 'disenkg[tune]' in err.value.hint


def test_bad_storage_url(tmp_path, umls_path):
    with pytest.raises(ConfigError, match="--storage 'study.db'"):
        _tune(tmp_path, umls_path, trials=1, storage="study.db")


def test_sampler_is_deterministic_per_trial_number():
    def draws(seed, first_number=0):
        study = optuna.create_study(sampler=study_mod.make_sampler("tpe", seed))
        for _ in range(first_number):  # other workers' trials, already in the study
            study.add_trial(optuna.trial.create_trial(
                params={"x": 0.5}, distributions={"x": optuna.distributions.
                                                  FloatDistribution(0, 1)}, value=0.0))
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0, 1))
            study.tell(trial, out[-1])
        return out

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert draws(7, first_number=3)[0] != draws(7)[0]  # another trial number, another draw


def test_print_space_and_help(capsys):
    from disenkg.cli.tune import build_parser
    from disenkg.run import main

    assert main(["tune", "--print-space", "--lr", "0.01", "--scorer", "distmult",
                 "--mi-estimator", "none"]) == 0
    text = capsys.readouterr().out
    assert "batch_size = { choices = [128, 256, 512, 1024] }" in text
    assert "lr =" not in text and "num_filters" not in text
    helptext = build_parser().format_help()
    assert "--trials" in helptext and "default search space" in helptext


def test_the_first_trial_is_the_preset(tmp_path, umls_path):
    """Trial 0 trains the preset's configuration exactly (its image too), the baseline the
    search is measured against."""
    from disenkg.presets import find_preset

    preset = read_toml(find_preset("umls"))
    result = disenkg.tune(dataset=str(umls_path), output_dir=str(tmp_path / "study"),
                          trials=1, epochs=1, no_progress=True, log_level="WARNING")
    args = json.loads((tmp_path / "study" / "trials" / "0" / "config.json").read_text())["args"]
    for key, value in preset.items():
        if key not in ("epochs", "patience"):
            assert args[key] == value, key
    assert result.study.trials[0].user_attrs["baseline"]


def test_two_workers_share_one_study(tmp_path, umls_path):
    """The documented distributed form: the same command, storage and study name in two
    processes; the trials are split between them, none drawn twice."""
    import subprocess

    from tests.conftest import REPO

    out = tmp_path / "study"
    out.mkdir()
    storage = f"sqlite:///{out / 'shared.db'}"
    argv = [sys.executable, "-m", "disenkg.run", "tune", "--dataset", str(umls_path),
            "--output-dir", str(out), "--storage", storage, "--study-name", "shared",
            "--trials", "4", "--pruner", "none", "--epochs", "2", "--init-dim", "16",
            "--channels", "16", "--k-h", "4", "--k-w", "4", "--num-filters", "8",
            "--kernel-size", "3", "--num-components", "2", "--batch-size", "512",
            "--no-progress", "--preset", "none", "--log-level", "WARNING"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5  # a worker may start one more before it sees the fourth
    draws = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(draws)) == len(draws)
    assert sorted(os.listdir(out / "trials")) == sorted(str(t.number) for t in study.trials)


def test_every_pruner_and_sampler_name_builds():
    from disenkg.hpo.config import PRUNERS, SAMPLERS

    kinds = {"median": "MedianPruner", "percentile": "PercentilePruner",
             "hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner",
             "none": "NopPruner"}
    assert set(kinds) == set(PRUNERS)
    for name in PRUNERS:
        assert type(study_mod.make_pruner(name, 3)).__name__ == kinds[name]
    for name in SAMPLERS:
        assert isinstance(study_mod.make_sampler(name, 0), optuna.samplers.BaseSampler)


def test_storage_retries_a_lost_race_to_create_the_tables(monkeypatch):
    """Two workers started together on a new database: the one whose schema insert
    collides opens the storage on its next attempt; one that stays broken is named."""
    from sqlalchemy.exc import IntegrityError

    calls = []
    real = optuna.storages.RDBStorage

    def flaky(url, **kw):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE"))
        return real(url, **kw)

    monkeypatch.setattr(optuna.storages, "RDBStorage", flaky)
    monkeypatch.setattr(study_mod.time, "sleep", lambda s: None)
    storage = study_mod._open_storage("sqlite:///:memory:")
    assert len(calls) == 2 and storage is not None

    def broken(url, **kw):
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(ConfigError, match="sqlite:///x.db"):
        study_mod._open_storage("sqlite:///x.db")
