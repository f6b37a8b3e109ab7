"""The typed configuration: one tree behind flags, TOML and the Python API (issue 30)."""

from __future__ import annotations

import ast
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import disenkg
from disenkg.api import resolve_config
from disenkg.cli.link import layers_from_argv
from disenkg.cli.link import main as link_main
from disenkg.config.options import Option
from disenkg.datasets import KGDataset
from disenkg.errors import ConfigError
from disenkg.models.registry import MODELS
from disenkg.pipeline import LinkConfig, all_options
from tests.conftest import REPO, kg_archive

FIXTURES = REPO / "tests" / "fixtures" / "runs_0_1_0"


@pytest.fixture(scope="module")
def umls():
    return KGDataset.load(kg_archive("umls"))


def cli_config(argv: list[str]) -> LinkConfig:
    return LinkConfig.resolve(layers_from_argv(argv)[0])


# ---------------------------------------------------------------- every field, two doors
#: a small, valid context per model (settings every walked case starts from)
BASE = {
    "disenkgat": dict(preset="none", channels=20, k_h=5, k_w=4, num_filters=4, kernel_size=3,
                      init_dim=8, epochs=2, batch_size=64, lr=0.01),
    "conve": dict(model="conve", preset="none", embed_dim=20, k_h=5, k_w=4, num_filters=4,
                  kernel_size=3, epochs=2, batch_size=64, lr=0.01),
}
#: non-default values where "the next choice" or "default + 1" would not make a valid run
SPECIAL = {
    "k_h": dict(k_h=2, k_w=10), "k_w": dict(k_h=4, k_w=5),
    "channels": dict(channels=12, k_h=4, k_w=3), "embed_dim": dict(embed_dim=12, k_h=4, k_w=3),
    "dataset": dict(dataset="kinship"), "preset": dict(preset="umls"),
    "output_dir": dict(output_dir="runs/elsewhere"), "data_dir": dict(data_dir="/nowhere"),
    "device": dict(device="cpu"), "log_level": dict(log_level="DEBUG"),
    "input_dropout": dict(scorer="conve", input_dropout=0.1),
    "num_perm": dict(num_perm=2), "gamma": dict(scorer="transe", gamma=3.5),
    "mi_lr": dict(mi_lr=0.002), "scorer": dict(scorer="conve"),
    "mi_estimator": dict(mi_estimator="none"), "head_precision": dict(head_precision="fp32"),
    "loss": dict(loss="softmax", order="before"), "entity_shards": dict(entity_shards=2),
    "max_archive_mb": dict(max_archive_mb=64), "tensorboard": dict(tensorboard=True),
}


def _other(opt: Option):
    if opt.is_bool:
        return not opt.default
    if opt.choices is not None:
        return next(c for c in opt.choices if c != opt.default)
    if opt.default is None:
        return 3 if "integer" in opt.rule.__name__ else 0.25
    if isinstance(opt.default, int):
        return opt.default + 1
    return round(opt.default / 2 + 0.05, 4)


def _cases():
    for model, spec in ((m, MODELS.get(m)) for m in MODELS.names()):
        names = {o.name for o in spec.config.options()}
        for opt in all_options():
            if opt.name in names or opt.name not in {o.name for m2 in MODELS.names()
                                                     for o in MODELS.get(m2).config.options()}:
                if opt.name not in names and model != "disenkgat":
                    continue  # run / data / training settings: walked once
                yield pytest.param(model, opt, id=f"{model}-{opt.name}")


def _argv(values: dict) -> list[str]:
    argv = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            argv += [flag, str(v)]
    return argv


@pytest.mark.parametrize("model,opt", list(_cases()))
def test_every_setting_means_the_same_from_the_api_and_the_command_line(model, opt, umls):
    special = SPECIAL[opt.name] if opt.name in SPECIAL else {opt.name: _other(opt)}
    if model == "conve" and "scorer" in special:  # ConvE has no scorer setting
        special = {opt.name: special[opt.name]}
    values = {**BASE[model], **special}
    if values.get("scorer", "interacte") not in ("interacte", "conve"):  # no image
        values = {k: v for k, v in values.items()
                  if k not in ("k_h", "k_w", "num_filters", "kernel_size")}
    api = resolve_config(**values)
    cli = cli_config(_argv(values))
    assert api.flat() == cli.flat()
    assert getattr(_section(api, opt.name), opt.name) == values[opt.name]
    assert api.sources[opt.name] == "api" and cli.sources[opt.name] == "flag"
    assert {k: s for k, s in api.sources.items() if s != "api"} == \
        {k: s for k, s in cli.sources.items() if s != "flag"}
    if opt.name in ("dataset", "data_dir", "entity_shards"):
        return  # another KG / data directory / a torchrun job: the model is built elsewhere
    a, _ = api.derive(umls)
    c, _ = cli.derive(umls)
    assert a.flat() == c.flat()
    spec = MODELS.get(a.model_name)
    torch.manual_seed(0)
    ma = spec.build(umls, a.model, seed=a.training.seed)
    torch.manual_seed(0)
    mc = spec.build(umls, c.model, seed=c.training.seed)
    sa, sc = ma.state_dict(), mc.state_dict()
    assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa)


def _section(config: LinkConfig, name: str):
    for sec in (config.run, config.data, config.training, config.model):
        if name in sec.option_names():
            return sec
    raise KeyError(name)


def test_false_and_none_are_settings_not_omissions(tmp_path):
    toml = REPO / "experiments" / "configs" / "umls_small.toml"
    c = resolve_config(toml, mi_recompute=False)
    assert c.model.mi_recompute is False and c.sources["mi_recompute"] == "api"
    c = resolve_config({"dataset": "umls", "mi_recompute": False, "layer_bias": True})
    assert c.model.mi_recompute is False and c.model.layer_bias is True
    assert c.sources["mi_recompute"] == "config"
    c = resolve_config(toml, lr=None, preset="none")  # None: derive it from the KG
    assert c.training.lr is None and c.sources["lr"] == "api"
    c2, derived = c.derive(KGDataset.load(kg_archive("umls")))
    assert c2.training.lr == derived["lr"][0] and c2.sources["lr"] == "derived"


@pytest.mark.parametrize("kw,message", [
    (dict(lr="fast"), "lr: expected a finite number > 0, got 'fast'"),
    (dict(epochs=0), "epochs: expected an integer >= 1, got 0"),
    (dict(epochs=True), "epochs: expected an integer >= 1, got True"),
    (dict(mi_recompute="no"), "mi_recompute: expected true or false, got 'no'"),
    (dict(scorer="convE"), "scorer: 'convE' is not one of"),
    (dict(label_smothing=0.1), "unknown key(s) ['label_smothing'] (did you mean: "
                                "label_smothing -> label_smoothing)"),
    (dict(model="conve", channels=4), "channels does not apply to --model conve"),
    (dict(scorer="distmult", num_filters=4), "num_filters does not apply to this disenkgat "
                                             "configuration (scorer 'distmult')"),
    (dict(lr=1e39), "lr: expected a finite number > 0, got 1e+39"),
    (dict(preset="none", channels=20, k_h=5, k_w=4, kernel_size=7),
     "--kernel-size 7 exceeds the image of the convolutional scorer (10 x 4)"),
])
def test_bad_values_raise_a_value_error_naming_the_setting(kw, message):
    with pytest.raises(ConfigError) as e:
        resolve_config(**kw)
    assert isinstance(e.value, ValueError) and message in str(e.value)


def test_an_inapplicable_flag_is_an_error_and_a_config_key_a_warning(tmp_path, caplog):
    with pytest.raises(ConfigError, match="--channels does not apply to --model conve"):
        cli_config(["--model", "conve", "--channels", "4"])
    cfg = tmp_path / "c.toml"
    cfg.write_text("channels = 4\nnum_components = 2\n")
    with caplog.at_level(logging.WARNING):
        c = cli_config(["--config", str(cfg), "--model", "conve"])
    assert "channels = 4 does not apply to --model conve; ignored" in caplog.text
    assert "channels" not in c.flat() and "num_components" not in c.flat()
    assert "num_components" not in c.sources


def test_precedence_default_derived_preset_config_flag(tmp_path, umls):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = 0.002\nepochs = 9\n")
    c = cli_config(["--dataset", "umls", "--config", str(cfg), "--epochs", "4"])
    assert (c.training.epochs, c.sources["epochs"]) == (4, "flag")
    assert (c.training.lr, c.sources["lr"]) == (0.002, "config")
    assert (c.training.batch_size, c.sources["batch_size"]) == (128, "preset")
    assert (c.training.weight_decay, c.sources["weight_decay"]) == (0.0, "default")
    c = cli_config(["--dataset", "umls", "--preset", "none", "--config", str(cfg)])
    d, derived = c.derive(umls)
    assert d.sources["batch_size"] == "derived" and d.training.batch_size == \
        derived["batch_size"][0]
    assert d.sources["lr"] == "config" and "lr" not in derived


def test_print_config_is_a_config_file_that_gives_the_same_run(tmp_path, capsys):
    link_main(["--print-config", "--dataset", str(kg_archive("umls")), "--preset", "none",
               "--epochs", "3"])
    text = capsys.readouterr().out
    assert "epochs = 3  # flag" in text and "batch_size = " in text and "# derived" in text
    parsed = tomllib.loads(text)
    assert parsed["training"]["epochs"] == 3
    out = tmp_path / "printed.toml"
    out.write_text(text)
    umls = KGDataset.load(kg_archive("umls"))
    again = cli_config(["--config", str(out)]).derive(umls)[0]
    first = cli_config(["--dataset", str(kg_archive("umls")), "--preset", "none",
                        "--epochs", "3"]).derive(umls)[0]
    assert again.flat() == first.flat()
    assert not list(tmp_path.glob("runs*"))  # nothing trained


def test_a_config_object_and_a_dict_train_like_the_command_line(tmp_path):
    """CLI and API give bit-identical metrics for one configuration (UMLS, 2 epochs)."""
    small = dict(dataset=str(kg_archive("umls")), preset="none", epochs=2, channels=20,
                 k_h=5, k_w=4, num_filters=4, kernel_size=3, init_dim=8, batch_size=256,
                 lr=0.01, no_progress=True, seed=1)
    m_cli = link_main(_argv({**small, "output_dir": str(tmp_path / "cli")}))
    config = resolve_config(small, output_dir=str(tmp_path / "api"))
    run = disenkg.train(config)
    run2 = disenkg.train(small, output_dir=str(tmp_path / "dict"))
    for r in (run, run2):
        m = json.loads((r.run_dir.path / "metrics.json").read_text())
        for key in ("valid", "test", "best_epoch", "epochs_run"):
            assert m[key] == m_cli[key]
        drop = ("output_dir",)
        assert {k: v for k, v in m["config"].items() if k not in drop} == \
            {k: v for k, v in m_cli["config"].items() if k not in drop}
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["sources"]["epochs"] == "flag" and saved["sources"]["batch_size"] == "flag"
    assert "embed_dim" not in saved["args"]  # a ConvE setting is not a DisenKGAT run's


# ---------------------------------------------------------------- runs written by 0.1.0
@pytest.mark.parametrize("name", ["umls-disenkgat", "umls-conve"])
def test_a_run_written_by_0_1_0_loads_and_predicts_the_same(name, tmp_path, monkeypatch):
    # the expected predictions were made on a CPU with bfloat16 hardware, where the heads'
    # "auto" precision is bf16: the same precision here, whatever this CPU has
    from disenkg.ops import precision

    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda *a, **k: True)
    expected = json.loads((FIXTURES / "expected.json").read_text())[name]
    run = disenkg.load_run(FIXTURES / name)
    queries = [tuple(q) for q in expected["queries"]]
    got = run.predict(queries, k=5)
    for g, e in zip(got, expected["predictions"]):
        assert [x["entity"] for x in g] == [x["entity"] for x in e]
        assert [x["score"] for x in g] == pytest.approx([x["score"] for x in e], rel=1e-5)
    assert run.evaluate("test")["mrr"] == pytest.approx(expected["test_mrr"], rel=1e-6)
    # and resumes (one more epoch) with today's code
    d = tmp_path / name
    shutil.copytree(FIXTURES / name, d)
    m = link_main(["--resume", "--output-dir", str(d), "--dataset", str(kg_archive("umls")),
                   "--epochs", "3", "--no-progress"])
    assert m["epochs_run"] == 3
    cfg = json.loads((d / "config.json").read_text())
    if name == "umls-conve":
        assert "num_components" not in cfg["args"]  # 0.1.0 recorded DisenKGAT's flags too


# ---------------------------------------------------------------- the house's floors
CORE = ("runs", "models", "training", "nn", "ops", "datasets", "evaluation", "config",
        "pipeline")


@pytest.mark.parametrize("package", CORE)
def test_the_core_imports_neither_the_cli_nor_argparse(package):
    for path in sorted((REPO / "disenkg" / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for n in names:
                assert n != "argparse" and not n.startswith("disenkg.cli"), \
                    f"{path.relative_to(REPO)} imports {n}"


def test_every_flag_is_a_setting_and_every_setting_a_flag():
    from disenkg.cli.link import build_parser

    dests = {a.dest for a in build_parser()._actions} - {"help", "config", "print_config"}
    assert dests == {o.name for o in all_options()} | {"model"}


def test_fixture_paths_exist():
    assert (FIXTURES / "umls-conve" / "config.json").is_file()
    assert Path(kg_archive("umls")).is_file()


def test_replace_changes_settings_by_name_and_keeps_their_rules():
    c = resolve_config(dataset="umls", epochs=3)
    d = c.replace(lr=0.02, scorer="distmult")
    assert (d.training.lr, d.model.scorer, d.training.epochs) == (0.02, "distmult", 3)
    assert d.sources["lr"] == "api" and d.sources["epochs"] == c.sources["epochs"]
    assert "k_h" not in d.flat()  # the image sizes went with the conv scorer
    with pytest.raises(ConfigError, match="lr: expected a finite number > 0, got -1"):
        c.replace(lr=-1)
    assert c.training.lr != 0.02  # frozen: the original is unchanged
