"""Flags and configs are validated before any data is read, by one rule set; user errors are
one line on stderr with exit status 2 (``--debug`` shows the traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from disenkg.cli.link import resolve_args
from disenkg.errors import ConfigError
from disenkg.run import main as run_main
from tests.conftest import REPO


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "disenkg.run", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=300)


def test_malformed_file_is_one_line_naming_file_and_line(tmp_path):
    d = tmp_path / "kg"
    d.mkdir()
    (d / "train.txt").write_text("a\tr\tb\nb\tr\n")
    (d / "valid.txt").write_text("a\tr\tb\n")
    (d / "test.txt").write_text("a\tr\tb\n")
    p = cli("--dataset", str(d), "--output-dir", str(tmp_path / "o"), "--no-progress",
            "--log-level", "WARNING")
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 1, p.stderr
    assert err[0].startswith(f"error: {d / 'train.txt'} line 2: expected 3 tab-separated "
                             f"fields")
    p = cli("--dataset", str(d), "--output-dir", str(tmp_path / "o2"), "--no-progress",
            "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr and "DatasetError" in p.stderr


@pytest.mark.parametrize("toml,message", [
    ('resume = "no"\n', "key 'resume': expected true or false, got 'no'"),
    ("epochs = 1.7\n", "key 'epochs': expected an integer >= 1, got 1.7"),
    ("lr = inf\n", "key 'lr': expected a finite number > 0, got inf"),
    ("num_components = 0\n", "key 'num_components': expected an integer >= 1, got 0"),
    ('scorer = "convE"\n', "key 'scorer': 'convE' is not one of"),
    ("label_smoothing = 1.0\n", "key 'label_smoothing': expected a number in [0, 1), got 1.0"),
    ("dataset = 3\n", "key 'dataset': expected a string, got 3"),
    ("lr = 0.1\n[train]\nlr = 0.2\n", "key 'lr' is set twice (top level and [train])"),
    ("[a]\nepochs = 2\n[b]\nepochs = 3\n", "key 'epochs' is set twice ([a] and [b])"),
    ("learning_rate = 0.1\n", "unknown key(s) ['learning_rate']"),
    ('model = "transe"\n', "key 'model': 'transe' is not one of ['conve', 'disenkgat']"),
    ("seed = 1e40\n", "key 'seed': expected an integer >= 0, got 1e+40"),
    ("gamma = 1e39\n", "key 'gamma': expected a finite number, got 1e+39"),
])
def test_config_values_are_checked_by_the_flag_rules(tmp_path, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as e:
        resolve_args(["--config", str(cfg), "--output-dir", str(tmp_path / "o")])
    assert message in str(e.value)
    assert not (tmp_path / "o").exists()  # nothing written, no data read


@pytest.mark.parametrize("flags,message", [
    (["--num-components", "0"], "--num-components: expected an integer >= 1, got '0'"),
    (["--lr", "inf"], "--lr: expected a finite number > 0, got 'inf'"),
    (["--lr", "nan"], "--lr: expected a finite number > 0, got 'nan'"),
    (["--epoch", "1"], "unrecognized arguments: --epoch 1"),
    (["--attention-dropout", "1.5"], "expected a number in [0, 1), got '1.5'"),
    (["--log-level", "chatty"], "--log-level: invalid choice: 'CHATTY'"),
])
def test_bad_flags_exit_2_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        resolve_args(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cross_flag_shape_rule_before_data(tmp_path):
    with pytest.raises(ConfigError, match=r"--channels 30 must equal --k-h \* --k-w = 20 \* 10"):
        resolve_args(["--channels", "30", "--k-h", "20", "--k-w", "10", "--dataset", "nope",
                      "--output-dir",
                      str(tmp_path / "o")])


def test_unknown_subcommand_lists_the_valid_ones(capsys):
    assert run_main(["lnk"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'lnk'; choose one of link, node, tune, predict" in err
    assert "did you mean 'link'?" in err


def test_unwritable_output_dir_fails_at_start(tmp_path, capsys):
    if os.geteuid() == 0:
        f = tmp_path / "file"
        f.write_text("")
        target = f / "sub"  # a path below a file: not creatable even for root
    else:  # pragma: no cover
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = ro / "sub"
    assert run_main(["link", "--output-dir", str(target), "--dataset", "umls"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_device_typo_is_a_config_error():
    from disenkg.cli.common import pick_device

    with pytest.raises(ConfigError, match="--device 'gpu': not a device"):
        pick_device("gpu")
