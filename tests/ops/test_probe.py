"""The capability probe behind ``auto`` precision: measured, cached per machine, robust to a
bad cache, and the decision rule."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from disenkg.cli import probe as probe_cli
from disenkg.ops import precision
from disenkg.ops import probe as probe_mod
from disenkg.ops.probe import (
    BF16_GAIN,
    PROBE_SHAPES,
    ProbeResult,
    bf16_pays,
    machine_key,
    probe,
    run_probe,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISENKG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DISENKG_PROBE", raising=False)
    probe_mod._probe.cache_clear()
    yield tmp_path / probe_mod.CACHE_FILE
    probe_mod._probe.cache_clear()


def _result(fp32, bf16, key="k"):
    return ProbeResult(key=key, gflops={"float32": fp32, "bfloat16": bf16}, seconds=0.1,
                       flags={"amx_bf16": False, "avx512_bf16": False})


def test_the_probe_measures_both_dtypes_on_every_shape():
    r = run_probe()
    assert r.key == machine_key() and set(r.gflops) == {"float32", "bfloat16"}
    for gflops in r.gflops.values():
        assert len(gflops) == len(PROBE_SHAPES) and all(g > 0 for g in gflops)
    assert "float32" in r.describe() and "512x512x512" in r.describe()


def test_gflops_are_the_products_flops_over_their_median_time(monkeypatch):
    ticks = iter([0.0, 0.5] + [x for i in range(5) for x in (10.0 * i, 10.0 * i + 0.01)])
    monkeypatch.setattr(probe_mod, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    monkeypatch.setattr(probe_mod, "TIME_CAP", 1.0)
    # warm-up 0.5 s, then five products of 0.01 s each: 2 * 64^3 / 0.01 s
    assert probe_mod._gflops(64, 64, 64, probe_mod.torch.float32) == pytest.approx(
        2 * 64 ** 3 / 0.01 / 1e9)
    ticks = iter([0.0, 3.0])  # a warm-up past the cap is the measure
    assert probe_mod._gflops(64, 64, 64, probe_mod.torch.float32) == pytest.approx(
        2 * 64 ** 3 / 3.0 / 1e9)


def test_the_rule_takes_bf16_only_when_faster_on_every_shape():
    assert bf16_pays(_result([10.0, 10.0], [BF16_GAIN * 10, 20.0]))
    assert not bf16_pays(_result([10.0, 10.0], [20.0, BF16_GAIN * 10 - 0.1]))
    assert not bf16_pays(_result([84.0, 34.0], [0.7, 1.0]))  # Zen 3: no bf16 kernel


def test_a_result_is_cached_per_machine_and_read_back(cache, monkeypatch):
    first = probe()
    assert first is not None and cache.exists()
    assert json.loads(cache.read_text())[machine_key()]["gflops"] == first.gflops
    probe_mod._probe.cache_clear()
    monkeypatch.setattr(probe_mod, "run_probe", lambda: pytest.fail("probed again"))
    assert probe() == first
    # another machine key (threads, torch version, CPU) gets its own entry beside it
    probe_mod._probe.cache_clear()
    monkeypatch.setattr(probe_mod, "machine_key", lambda: "other")
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([1.0, 1.0], [9.0, 9.0],
                                                                  key="other"))
    assert probe().key == "other" and bf16_pays()
    assert set(json.loads(cache.read_text())) == {first.key, "other"}


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"k": {"key": "k"}}'])
def test_a_bad_cache_is_named_and_replaced(cache, monkeypatch, caplog, text):
    cache.write_text(text)
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([1.0, 1.0], [2.0, 2.0],
                                                                  key=machine_key()))
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.probe"):
        r = probe()
    assert r.gflops["bfloat16"] == [2.0, 2.0]
    assert str(cache) in caplog.text and "not a probe cache" in caplog.text
    assert json.loads(cache.read_text())[machine_key()]["gflops"]["float32"] == [1.0, 1.0]


def test_an_unwritable_cache_keeps_the_result_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DISENKG_CACHE_DIR", str(blocker / "sub"))
    probe_mod._probe.cache_clear()
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([1.0, 1.0], [2.0, 2.0]))
    try:
        assert probe().gflops["float32"] == [1.0, 1.0]
    finally:
        probe_mod._probe.cache_clear()


def test_probe_off_falls_back_to_the_feature_flags(cache, monkeypatch):
    monkeypatch.setenv("DISENKG_PROBE", "off")
    monkeypatch.setattr(probe_mod, "run_probe", lambda: pytest.fail("probed"))
    assert probe() is None
    for flags, want in (({"amx_bf16": True, "avx512_bf16": False}, True),
                        ({"amx_bf16": False, "avx512_bf16": False}, False)):
        monkeypatch.setattr(probe_mod, "_flags", lambda f=flags: f)
        assert bf16_pays() is want and precision.fast_bf16_cpu() is want


def test_auto_precision_follows_the_probe(cache, monkeypatch):
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([1.0, 1.0], [5.0, 5.0],
                                                                  key=machine_key()))
    assert precision.fast_bf16_cpu()
    x = probe_mod.torch.zeros(2)
    assert precision.auto_bf16(x) and not precision.auto_bf16(x.double())


def test_the_command_line_prints_the_probe(cache, monkeypatch, capsys):
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([10.0, 10.0], [1.0, 1.0],
                                                                  key=machine_key()))
    probe_cli.main([])
    out = capsys.readouterr().out
    assert "auto precision on this CPU: fp32" in out and str(cache) in out
    monkeypatch.setattr(probe_mod, "run_probe", lambda: _result([1.0, 1.0], [10.0, 10.0],
                                                                  key=machine_key()))
    probe_cli.main(["--refresh"])
    assert "auto precision on this CPU: bf16" in capsys.readouterr().out
