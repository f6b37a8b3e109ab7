"""The native-kernel cache trusts a library only after its checks: build record (size and
sha256, before mapping), ABI version, self-check; otherwise it rebuilds once, else falls
back to PyTorch with a WARNING."""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest

from disenkg.ops import native


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache and no library loaded in this process (restored afterwards)."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    monkeypatch.setattr(native.available, "_logged", False, raising=False)
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path))
    monkeypatch.delenv("DISENKG_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    return tmp_path


def replace(path, data: bytes) -> None:
    """Writes a new file at ``path`` (a new inode: the library this process has mapped is
    left intact, as a truncation by another process would leave it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def reset(monkeypatch):
    """Forget (and unmap) the library, as a new process would start."""
    if native._lib is not None:
        native._unload(native._lib)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)


def test_build_writes_a_record_and_reloads(fresh, monkeypatch):
    native.load()
    target = native.library_path()
    record = target.with_name(target.name + ".json")
    assert target.is_file() and record.is_file()
    mtime = target.stat().st_mtime_ns
    reset(monkeypatch)
    native.load()  # from the cache: no rebuild
    assert target.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["truncate", "garbage_with_record", "no_record"])
def test_damaged_library_is_rebuilt_not_crashed(fresh, monkeypatch, caplog, damage):
    native.load()
    target = native.library_path()
    record = target.with_name(target.name + ".json")
    data = target.read_bytes()
    reset(monkeypatch)
    if damage == "truncate":  # mapping this would SIGBUS
        replace(target, data[: len(data) // 3])
    elif damage == "garbage_with_record":
        junk = b"\x7fELF" + b"\0" * 2000
        replace(target, junk)
        import hashlib
        import json

        record.write_text(json.dumps({"size": len(junk),
                                      "sha256": hashlib.sha256(junk).hexdigest()}))
    else:
        record.unlink()
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.native"):
        lib = native.load()
    assert lib.disenkg_abi_version() == native._ABI_VERSION
    assert "unusable" in caplog.text and "rebuilding" in caplog.text
    assert target.read_bytes() != data[: len(data) // 3]


def test_library_without_the_version_symbol_is_rebuilt(fresh, monkeypatch, caplog, tmp_path):
    native.load()
    target = native.library_path()
    reset(monkeypatch)
    src = tmp_path / "other.c"
    src.write_text("int something_else(void) { return 1; }\n")
    other = tmp_path / "other.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(other), str(src)], check=True)
    replace(target, other.read_bytes())
    import hashlib
    import json

    record = target.with_name(target.name + ".json")
    record.write_text(json.dumps({"size": target.stat().st_size,
                                  "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}))
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.native"):
        lib = native.load()
    assert "has no disenkg_abi_version symbol" in caplog.text
    assert lib.disenkg_abi_version() == native._ABI_VERSION


def test_failed_rebuild_falls_back_with_a_warning(fresh, monkeypatch, caplog, tmp_path):
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal: broken toolchain' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.native"):
        assert not native.available()
    assert "fatal: broken toolchain" in caplog.text and "To fix" in caplog.text
    assert "DISENKG_NATIVE=0" in caplog.text


@pytest.mark.parametrize("value", ["0", "false", "False", "NO", "off"])
def test_false_spellings_disable(fresh, monkeypatch, value, caplog):
    monkeypatch.setenv("DISENKG_NATIVE", value)
    assert not native.enabled()
    with caplog.at_level(logging.INFO, logger="disenkg.ops.native"):
        assert not native.available()
    assert "disabled" in native.unavailable_reason()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", ""])
def test_true_spellings_enable(monkeypatch, value):
    monkeypatch.setenv("DISENKG_NATIVE", value)
    assert native.enabled()


def test_unknown_spelling_warns_and_stays_enabled(monkeypatch, caplog):
    monkeypatch.setenv("DISENKG_NATIVE", "maybe")
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.native"):
        assert native.enabled()
    assert "'maybe' is not one of" in caplog.text


def _forged(tmp_path, marker):
    """A library whose constructor creates ``marker`` (what a planted library would run)."""
    src = tmp_path / "forged.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
                   "int disenkg_abi_version(void) { return 0; }\n")
    out = tmp_path / "forged.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("how", ["world_writable_dir", "group_writable_file", "symlink"])
def test_a_planted_library_with_a_matching_record_is_never_mapped(fresh, monkeypatch, caplog,
                                                                   tmp_path, how):
    import hashlib
    import json
    import os

    marker = tmp_path / "constructor-ran"
    data = _forged(tmp_path, marker)
    target = native.library_path()
    target.parent.mkdir(parents=True)
    if how == "symlink":
        (tmp_path / "elsewhere.so").write_bytes(data)
        os.symlink(tmp_path / "elsewhere.so", target)
    else:
        target.write_bytes(data)
    record = target.with_name(target.name + ".json")
    record.write_text(json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                  "abi": native._ABI_VERSION}))
    if how == "world_writable_dir":
        os.chmod(target.parent, 0o777)
    elif how == "group_writable_file":
        os.chmod(target, 0o664)
    with caplog.at_level(logging.WARNING, logger="disenkg.ops.native"):
        lib = native.load()
    assert not marker.exists()  # the planted constructor never ran
    assert lib.disenkg_abi_version() == native._ABI_VERSION  # a private build serves
    assert "not loading native kernels from" in caplog.text
    assert "private directory" in caplog.text
