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
    DEFAULT_TILE_ROWS,
    PROBE_SHAPES,
    TILE_CANDIDATES,
    TILE_GAIN,
    ProbeResult,
    bf16_pays,
    machine_key,
    probe,
    run_probe,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path))
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
    monkeypatch.setenv("DISENKG_CACHE", str(blocker / "sub"))
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


def test_the_tile_rule_takes_a_larger_tile_only_when_clearly_faster():
    def rows(times):
        return ProbeResult(key="k", gflops={}, seconds=0.1, flags={},
                           tile_seconds={"float32": times}).tile_rows("float32")

    assert TILE_CANDIDATES == (4096, 16384, 65536)
    assert rows([1.0, 1.0, 1.0]) == 4096  # ties keep the smallest
    assert rows([1.0, 1.0 / TILE_GAIN, 0.99 / TILE_GAIN]) == 16384
    assert rows([1.0, 0.5, 0.5 / TILE_GAIN]) == 65536
    assert rows([1.0, 1.2, 0.9]) == 65536  # faster than every smaller one
    assert rows([1.0, 0.5, 0.6]) == 16384
    assert ProbeResult(key="k", gflops={}, seconds=0.1, flags={}).tile_rows(
        "bfloat16") == DEFAULT_TILE_ROWS  # not measured


def test_the_probe_times_the_tile_candidates(monkeypatch):
    """float32 always, bfloat16 only where its products pay; a cache entry of the first
    probe version (no tile times) still reads."""
    for gflops, want in (({"float32": [10.0, 10.0], "bfloat16": [50.0, 50.0]},
                          {"float32", "bfloat16"}),
                         ({"float32": [10.0, 10.0], "bfloat16": [1.0, 1.0]}, {"float32"})):
        monkeypatch.setattr(probe_mod, "_gflops",
                            lambda m, k, n, d, g=gflops: g[str(d)[6:]][0])
        timed = []
        monkeypatch.setattr(probe_mod, "_tile_seconds",
                            lambda r, d, t=timed: t.append((r, d)) or 1.0)
        r = run_probe()
        assert set(r.tile_seconds) == want
        assert len(timed) == len(TILE_CANDIDATES) * len(want)
        assert all(len(v) == len(TILE_CANDIDATES) for v in r.tile_seconds.values())
    old = ProbeResult(**{"key": "k", "gflops": {}, "seconds": 0.1, "flags": {}})
    assert old.tile_seconds == {} and old.tile_rows("float32") == DEFAULT_TILE_ROWS


def test_the_tile_pass_runs_and_the_head_asks_the_probe(cache, monkeypatch):
    from disenkg.ops.conv_head import buffers

    assert probe_mod._tile_seconds(4096, probe_mod.torch.float32) > 0
    monkeypatch.setattr(probe_mod, "run_probe", lambda: ProbeResult(
        key=machine_key(), gflops={}, seconds=0.1, flags={},
        tile_seconds={"float32": [1.0, 0.5, 0.9]}))
    assert buffers.TILE_ROWS is None
    assert buffers.tile_rows(probe_mod.torch.float32) == 16384
    assert buffers.tile_images(400, probe_mod.torch.float32) == 40
    assert buffers.tile_rows(probe_mod.torch.bfloat16) == DEFAULT_TILE_ROWS
    monkeypatch.setattr(buffers, "TILE_ROWS", 100)  # an override wins
    assert buffers.tile_rows(probe_mod.torch.float32) == 100
    monkeypatch.setenv("DISENKG_PROBE", "off")
    monkeypatch.setattr(buffers, "TILE_ROWS", None)
    assert buffers.tile_rows(probe_mod.torch.float32) == DEFAULT_TILE_ROWS
