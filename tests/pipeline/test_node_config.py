"""The node tasks' configuration: one section per task, flags generated from it, settings
of another task refused, the API equal to the command line (issue 30)."""

from __future__ import annotations

import json
import logging

import pytest

import disenkg
from disenkg.cli.node import build_parser, resolve_args
from disenkg.datasets.arrays import make_synthetic
from disenkg.errors import ConfigError
from disenkg.pipeline.config import Layer
from disenkg.pipeline.node import NODE_TASKS, node_options, resolve_node
from disenkg.run import main as run_main
from disenkg.training.node_config import TASKS, ArrayTaskConfig, ClassificationConfig


def test_every_task_is_registered_and_every_setting_is_a_flag():
    assert set(TASKS) == set(NODE_TASKS.names())
    dests = {a.dest for a in build_parser()._actions} - {"help", "config"}
    assert dests == {o.name for o in node_options()}
    text = build_parser().format_help()
    assert "(default: 20 array, 1000 classification, 1000 link)" in " ".join(text.split())


def test_task_defaults_and_sources(tmp_path):
    c = resolve_node([Layer("flag", {"task": "array", "features": "f.npy"})])
    assert isinstance(c.task, ArrayTaskConfig) and c.task.epochs == 20 and c.task.lr == 0.003
    assert c.sources["features"] == "flag" and c.sources["epochs"] == "default"
    c = resolve_node([])
    assert isinstance(c.task, ClassificationConfig) and c.task.epochs == 1000
    assert "features" not in c.flat()  # another task's settings are not this run's


def test_a_setting_of_another_task_is_refused(tmp_path, caplog):
    with pytest.raises(ConfigError, match="--encoder does not apply to --task array"):
        resolve_args(["--task", "array", "--encoder", "mlp", "--features", "x.npy",
                      "--output-dir", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="max_samples does not apply to --task link"):
        resolve_node([Layer("api", {"task": "link", "max_samples": 10})])
    cfg = tmp_path / "c.toml"
    cfg.write_text('encoder = "mlp"\n')
    with caplog.at_level(logging.WARNING):
        c = resolve_node([Layer("config", {"encoder": "mlp"}, str(cfg)),
                          Layer("flag", {"task": "link"})])
    assert "encoder = 'mlp' does not apply to --task link; ignored" in caplog.text
    assert "encoder" not in c.flat()
    assert not (tmp_path / "o").exists()


def test_bad_node_values_raise_value_errors():
    with pytest.raises(ConfigError, match="seeds: expected an integer >= 1, got 0"):
        resolve_node([Layer("api", {"seeds": 0})])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        resolve_node([Layer("api", {"epoch": 3})])


def test_api_and_command_line_give_the_same_array_run(tmp_path):
    p = make_synthetic(tmp_path / "syn", shape=(2, 20, 3, 6, 2), extra_edges=3)
    common = dict(task="array", features=str(p["features"]), edges=str(p["edges"]),
                  targets=str(p["targets"]), seeds=1, epochs=2, max_samples=12,
                  latent=8, no_progress=True)
    argv = ["node"] + [x for k, v in common.items()
                       for x in (["--" + k.replace("_", "-")] + ([] if v is True else [str(v)]))]
    assert run_main([*argv, "--output-dir", str(tmp_path / "cli")]) == 0
    m = disenkg.train_node(common, output_dir=str(tmp_path / "api"))
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli["seeds"] == m["seeds"] and cli["baseline"]["seeds"] == m["baseline"]["seeds"]
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert cfg["args"]["latent"] == 8 and cfg["sources"]["latent"] == "flag"
    assert "encoder" not in cfg["args"]
