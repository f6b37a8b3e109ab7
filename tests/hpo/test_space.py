"""The search space: ranges declared on the configuration fields, --space files, Optuna
draws inside the declared ranges."""

from __future__ import annotations

import pytest

from disenkg.config.search import Choice, Dimension, Range
from disenkg.errors import ConfigError
from disenkg.hpo.space import default_space, read_space, space_to_toml, tunable_options
from disenkg.pipeline.config import Layer, LinkConfig


def _config(**values) -> LinkConfig:
    return LinkConfig.resolve([Layer("flag", values, "test")], preset=False)


def test_default_space_follows_the_model_and_its_conditions():
    disen = default_space(_config())
    assert {"lr", "batch_size", "label_smoothing", "num_components", "channels",
            "attention_dropout", "mi_weight", "num_filters", "feature_dropout"} <= set(disen)
    assert "input_dropout" not in disen  # InteractE has none
    distmult = default_space(_config(scorer="distmult", mi_estimator="none"))
    assert "num_filters" not in distmult and "feature_dropout" not in distmult
    assert "mi_weight" not in distmult
    conve = default_space(_config(model="conve"))
    assert {"embed_dim", "input_dropout", "num_filters"} <= set(conve)
    assert "num_components" not in conve
    # every declared range passes the setting's own rule
    for cfg in (_config(), _config(model="conve")):
        table = tunable_options(cfg)
        for name, dim in default_space(cfg).items():
            for v in dim.values():
                assert table[name].rule(v) == v, name


def test_fixed_settings_leave_the_space():
    space = default_space(_config(), fixed={"lr", "channels"})
    assert "lr" not in space and "channels" not in space and "batch_size" in space


def test_space_file_ranges_fixes_and_drops(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text('lr = {low = 0.001, high = 0.005, log = true}\n'
                 'num-components = {choices = [2, 4]}\n'
                 'label_smoothing = false\n'
                 'batch_size = 256\n'
                 '[encoder_dropout]\nlow = 0.1\nhigh = 0.2\n')
    cfg = _config()
    space, fixed = read_space(f, default_space(cfg), cfg)
    assert space["lr"] == Range(0.001, 0.005, log=True)
    assert space["num_components"] == Choice(2, 4)
    assert space["encoder_dropout"] == Range(0.1, 0.2)
    assert "label_smoothing" not in space and "batch_size" not in space
    assert fixed == {"batch_size": 256}


@pytest.mark.parametrize("text, match", [
    ("lrr = {low = 0.1, high = 0.2}", "did you mean 'lr'"),
    ("num_perm = {choices = [1, 2]}", "not a setting a search can move"),  # not with distmult
    ("channels = {low = 0, high = 100}", "channels"),  # integer(1) refuses 0
    ("channels = {low = 10.5, high = 100}", "channels"),
    ("lr = {low = 0.1}", "expected"),
    ("lr = {low = 0.2, high = 0.1}", "low 0.2 > high 0.1"),
    ("lr = {low = 0.0, high = 0.1, log = true}", "log range needs low > 0"),
    ("lr = {choices = []}", "non-empty"),
    ("attention_dropout = 1.5", "attention_dropout"),
    ("lr = {low = 0.1, high = 0.2, log = 1}", "log must be true or false"),
])
def test_space_file_errors_name_the_file_and_key(tmp_path, text, match):
    f = tmp_path / "space.toml"
    f.write_text(text + "\n")
    cfg = _config(scorer="distmult")
    with pytest.raises(ConfigError, match=match) as err:
        read_space(f, default_space(cfg), cfg)
    assert str(f) in str(err.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(ConfigError, match="--space: no such file"):
        read_space(tmp_path / "nope.toml", {}, _config())


def test_print_form_reads_back(tmp_path):
    cfg = _config()
    space = default_space(cfg)
    f = tmp_path / "space.toml"
    f.write_text(space_to_toml(space))
    again, fixed = read_space(f, {}, cfg)
    assert again == space and fixed == {}


def test_dimensions_contain_and_draw_inside():
    optuna = pytest.importorskip("optuna")
    dims = {"a": Range(1e-4, 1e-2, log=True), "b": Range(1, 9, step=2), "c": Range(0.0, 0.5),
            "d": Choice(50, 100, 200), "e": Choice("x", "y")}
    assert dims["b"].contains(5) and not dims["b"].contains(4) and not dims["b"].contains(5.5)
    assert not dims["d"].contains(75) and not dims["d"].contains(True)
    assert not dims["a"].contains(0.1) and dims["a"].contains(0.001)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        for name, dim in dims.items():
            v = dim.suggest(trial, name)
            assert dim.contains(v), (name, v)
        assert isinstance(trial.params["b"], int) and isinstance(trial.params["c"], float)
        study.tell(trial, 0.0)


def test_dimension_from_toml_round_trip():
    import tomllib

    for dim in (Range(1e-4, 1e-2, log=True), Range(1, 9, step=2), Range(0.0, 0.5),
                Choice(50, 100), Choice("a", "b"), Choice(True, False)):
        parsed = tomllib.loads("x = " + dim.to_toml())["x"]
        assert Dimension.from_toml(parsed, "x") == dim
