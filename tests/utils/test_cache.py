"""One cache directory for datasets, native kernels and the probe."""

from __future__ import annotations

from pathlib import Path

from disenkg.datasets import sources
from disenkg.ops import native, probe
from disenkg.utils.cache import cache_dir


def test_one_variable_moves_every_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert sources.cache_dir() == probe.cache_dir() == tmp_path / "c"
    assert native.library_path().parent == tmp_path / "c" / "native"


def test_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DISENKG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "disenkg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == Path(tmp_path / "home" / ".cache" / "disenkg")
