"""Native (C + OpenMP) kernels, compiled on first use and loaded with :mod:`ctypes`.

The sources ship with the package: ``edge_kernels.{c,h}`` (the DisenKGAT layer's edge
products, :mod:`disenkg.ops.edge_products`), ``patch_kernels.{c,h}`` (the convolutional
scorer head's im2col / col2im and ReLU-dropout epilogue, :mod:`disenkg.ops.patches`) and
``mixture_kernels.c`` (the element-wise tile of the chunked mixture BCE,
:mod:`disenkg.ops.mixture_bce.chunked`), ``topk_kernels.c`` (the running top-k of
:mod:`disenkg.ops.running_topk` and the TSV lines of :mod:`disenkg.runs.complete`) and
``dropout_kernels.c`` (counter-based dropout, :mod:`disenkg.ops.dropout`). The first call
to :func:`load` compiles them with the system C compiler (``$CC``, else ``cc``) into the
cache (``native/`` under :func:`disenkg.utils.cache.cache_dir`, default
``~/.cache/disenkg/native``) under a name hashed from the sources, the flags and the CPU,
written atomically so concurrent processes are safe; later calls load the cached
library. No torch headers are involved, so a build takes about a second.

A cached library is loaded only from a directory and files that this user owns and that
nobody else can write (no symbolic links), so a library and build record planted in a shared
or world-writable cache are never mapped (their constructors never run): the kernels are
then built into a private temporary directory instead, with a WARNING. It is trusted only
after three more checks: its size and sha256 match the build
record written beside it (``.so.json``; checked *before* the file is mapped, so a
truncated library cannot crash the process with SIGBUS), it reports the expected ABI
version, and a tiny self-check computes the right answer. A library failing any of them is
rebuilt once; if the rebuild fails too, the PyTorch fallback runs and a WARNING says why
and how to fix it.

``DISENKG_NATIVE=0`` (or ``false`` / ``no`` / ``off``) disables the kernels.
:func:`available` says whether they can be used (callers then fall back to the
pure-PyTorch path) and :func:`unavailable_reason` why not; :func:`load` raises
:class:`NativeUnavailableError` with the reason (the compiler's message for a failed
build).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from disenkg.ops.impls import KERNEL_IMPLS
from disenkg.utils.cache import cache_dir

__all__ = ["IMPLS", "SUFFIXES", "NativeUnavailableError", "available", "enabled", "kernel",
           "library_path", "load", "unavailable_reason", "use"]

#: the ``impl`` choices of every element kernel with a native and a PyTorch version
#: (:data:`disenkg.ops.impls.KERNEL_IMPLS`)
IMPLS = KERNEL_IMPLS

logger = logging.getLogger(__name__)

_SOURCE_DIR = Path(__file__).resolve().parent
_SOURCES = ("edge_kernels.c", "edge_kernels.h", "patch_kernels.c", "patch_kernels.h",
            "mixture_kernels.c", "topk_kernels.c", "dropout_kernels.c")
# -fno-trapping-math: no kernel reads floating-point exception flags, and it lets the
# compiler if-convert and vectorise the polynomial exp / log of mixture_kernels.c
_ABI_VERSION = 10  # the one definition: passed to the C sources as -DDISENKG_ABI_VERSION
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno",
          "-fno-trapping-math", f"-DDISENKG_ABI_VERSION={_ABI_VERSION}")
_FALSE = ("0", "false", "no", "off")
_TRUE = ("", "1", "true", "yes", "on")

_lib: ctypes.CDLL | None = None
_error: str | None = None


class NativeUnavailableError(RuntimeError):
    """The native kernels are disabled or could not be built."""


class _Unusable(Exception):
    """A library file that must not be used (and is rebuilt)."""


def enabled() -> bool:
    """``DISENKG_NATIVE``: ``0`` / ``false`` / ``no`` / ``off`` (any case) disable the
    kernels; unset, ``1`` / ``true`` / ``yes`` / ``on`` enable them; anything else enables
    them with a WARNING."""
    value = os.environ.get("DISENKG_NATIVE", "1").strip().lower()
    if value in _FALSE:
        return False
    if value not in _TRUE:
        logger.warning("DISENKG_NATIVE=%r is not one of %s (disable) or %s (enable); the "
                       "native kernels stay enabled", value, list(_FALSE), list(_TRUE[1:]))
    return True


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _untrusted(target: Path) -> str | None:
    """Why the cached ``target`` (with its directory and build record) must not be loaded:
    another owner, a symbolic link, or write permission for group or others; else ``None``."""
    uid = os.getuid()
    for p in (target.parent, target, _record_path(target)):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue  # a missing record: the usual checks rebuild
        if stat.S_ISLNK(st.st_mode):
            return f"{p} is a symbolic link"
        if st.st_uid != uid:
            return f"{p} is owned by uid {st.st_uid}, not by this user ({uid})"
        if st.st_mode & 0o022:
            return f"{p} is writable by group or others (mode {oct(st.st_mode & 0o777)})"
    return None


def _private_target(target: Path) -> Path:
    """``target``'s name in a new directory only this user can use (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="disenkg-native-")) / target.name


def _check_file(target: Path) -> None:
    """Size and sha256 against the build record, before the file is ever mapped."""
    record = _record_path(target)
    try:
        meta = json.loads(record.read_text())
        size, digest = int(meta["size"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _Unusable(f"no valid build record {record.name} ({type(err).__name__})") from err
    actual = target.stat().st_size
    if actual != size:
        raise _Unusable(f"size {actual} bytes, the build recorded {size}")
    if _digest(target) != digest:
        raise _Unusable("sha256 differs from the build record")


def _self_check(lib: ctypes.CDLL) -> None:
    """A tiny computation with a known answer: 1.0 (bfloat16 0x3F80) added to four floats."""
    acc = (ctypes.c_float * 4)(1.0, 2.0, 3.0, 4.0)
    ones = (ctypes.c_uint16 * 4)(0x3F80, 0x3F80, 0x3F80, 0x3F80)
    lib.accumulate_bf16(ctypes.cast(acc, ctypes.c_void_p), ctypes.cast(ones, ctypes.c_void_p),
                        4, 1)
    if list(acc) != [2.0, 3.0, 4.0, 5.0]:
        raise _Unusable(f"self-check computed {list(acc)}, expected [2.0, 3.0, 4.0, 5.0]")


def _open(target: Path) -> ctypes.CDLL:
    """Loads a cached library after all checks; :class:`_Unusable` says why not."""
    _check_file(target)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as err:
        raise _Unusable(f"cannot be loaded: {err}") from err
    try:
        version = getattr(lib, "disenkg_abi_version", None)
        if version is None:
            raise _Unusable("has no disenkg_abi_version symbol")
        version.restype = ctypes.c_int
        if version() != _ABI_VERSION:
            raise _Unusable(f"reports ABI version {version()}, expected {_ABI_VERSION}")
        try:
            _declare(lib)
        except AttributeError as err:
            raise _Unusable(f"lacks a kernel: {err}") from err
        _self_check(lib)
    except _Unusable:
        _unload(lib)  # so the rebuilt file at the same path is really loaded
        raise
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes

    dlclose = getattr(_ctypes, "dlclose", None)
    if dlclose is not None:
        dlclose(lib._handle)


def _cache_dir() -> Path:
    return cache_dir() / "native"


def _cpu_signature() -> str:
    """The CPU flags (the build uses ``-march=native``), so a shared cache stays safe."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = [compiler, *_FLAGS, "-o", tmp,
           *(str(_SOURCE_DIR / n) for n in _SOURCES if n.endswith(".c"))]
    record = _record_path(target)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise NativeUnavailableError(
                f"building the native kernels failed ({' '.join(cmd)}):\n{res.stderr}")
        meta = json.dumps({"size": Path(tmp).stat().st_size, "sha256": _digest(Path(tmp)),
                           "abi": _ABI_VERSION, "command": cmd})
        fd, tmp_meta = tempfile.mkstemp(dir=target.parent, suffix=".json.tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(meta)
        os.replace(tmp_meta, record)  # a reader seeing a mismatched pair rebuilds
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library_path(compiler: str | None = None) -> Path:
    """Where the library built by ``compiler`` (default ``$CC`` or ``cc``) is cached: a name
    hashed from the sources, the flags, the compiler and the CPU."""
    compiler = compiler or os.environ.get("CC", "cc")
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((_SOURCE_DIR / name).read_bytes())
    h.update(" ".join((compiler, *_FLAGS, platform.machine(), _cpu_signature())).encode())
    return _cache_dir() / f"disenkg_kernels-{h.hexdigest()[:16]}.so"


#: the C kernels' name suffix per element type (``str(torch dtype)`` without ``torch.``)
SUFFIXES = {"float32": "f32", "float64": "f64", "bfloat16": "bf16"}


def kernel(name: str, dtype: object) -> Callable[..., Any]:
    """The kernel ``{name}_{suffix}`` of the loaded library for the torch ``dtype``
    (:data:`SUFFIXES`; builds the library on first use, raises when unavailable)."""
    return getattr(load(), f"{name}_{SUFFIXES[str(dtype).removeprefix('torch.')]}")


def load() -> ctypes.CDLL:
    """Returns the loaded library, building it if needed (raises when unavailable)."""
    global _lib, _error
    if _lib is not None:
        return _lib
    if _error is not None:
        raise NativeUnavailableError(_error)
    try:
        if not enabled():
            raise NativeUnavailableError(
                f"disabled by DISENKG_NATIVE={os.environ.get('DISENKG_NATIVE')}")
        compiler = os.environ.get("CC", "cc")
        if shutil.which(compiler) is None:
            raise NativeUnavailableError(f"no C compiler {compiler!r} on PATH (set $CC)")
        target = library_path(compiler)
        lib = None
        why = _untrusted(target) if target.parent.exists() else None
        if why is not None:
            logger.warning("not loading native kernels from %s: %s; building them into a "
                           "private directory", target.parent, why)
            target = _private_target(target)
        if target.exists():
            try:
                lib = _open(target)
            except _Unusable as why:
                logger.warning("cached native kernels %s are unusable (%s); rebuilding them",
                               target, why)
        if lib is None:
            logger.info("building native kernels into %s", target)
            _build(compiler, target)
            try:
                lib = _open(target)
            except _Unusable as why:
                raise NativeUnavailableError(f"the freshly built {target} is unusable: {why}"
                                             ) from None
    except (NativeUnavailableError, OSError) as exc:
        _error = str(exc)
        raise NativeUnavailableError(_error) from exc
    _lib = lib
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        getattr(lib, f"edge_sddmm_{suffix}").argtypes = [p] * 7 + [i64] * 3 + [p, c_int]
        getattr(lib, f"edge_spmm_{suffix}").argtypes = [p] * 7 + [i64] * 3 + [p, p, i64, p,
                                                                             c_int, c_int]
        for name in ("edge_sddmm", "edge_spmm"):
            getattr(lib, f"{name}_{suffix}").restype = None
    for suffix in ("f32", "f64", "bf16"):
        getattr(lib, f"im2col_cl_{suffix}").argtypes = [p] + [i64] * 7 + [p, c_int]
        getattr(lib, f"col2im_cl_{suffix}").argtypes = [p] + [i64] * 5 + [p, c_int]
        getattr(lib, f"relu_mask_{suffix}").argtypes = [p, p] + [i64] * 3 + [c_int]
        getattr(lib, f"relu_mask_backward_{suffix}").argtypes = [p, p, i64, c_int]
        for name in ("im2col_cl", "col2im_cl", "relu_mask", "relu_mask_backward"):
            getattr(lib, f"{name}_{suffix}").restype = None
    lib.dropout_f32.argtypes = [p, p, i64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float,
                                c_int]
    lib.dropout_f64.argtypes = [p, p, i64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_double,
                                c_int]
    lib.dropout_f32.restype = lib.dropout_f64.restype = None
    lib.accumulate_bf16.argtypes = [p, p, i64, c_int]
    lib.accumulate_bf16.restype = None
    lib.mixture_bce_tile_f32.argtypes = [p, p, p] + [i64] * 3 + [ctypes.c_float] * 2 + [
        c_int, p, p, c_int]
    lib.mixture_bce_tile_f32.restype = None
    lib.topk_update_f32.argtypes = [p] + [i64] * 5 + [p, p, c_int]
    lib.topk_update_f32.restype = None
    lib.format_tsv_rows.argtypes = [p] * 4 + [i64] + [p, p, p, i64, p, i64, p, i64]
    lib.format_tsv_rows.restype = i64


def available() -> bool:
    """Whether :func:`load` succeeds. Otherwise the reason is logged once: at INFO level
    when the kernels were disabled on purpose, else as a WARNING with how to fix it."""
    try:
        load()
    except NativeUnavailableError as exc:
        if not getattr(available, "_logged", False):
            if not enabled():
                logger.info("native kernels disabled, using PyTorch: %s", exc)
            else:
                logger.warning(
                    "native kernels unavailable, using the slower PyTorch path: %s. To fix: "
                    "install a C compiler with OpenMP (e.g. gcc) or point $CC at one, and "
                    "clear %s; set DISENKG_NATIVE=0 to silence this", exc, _cache_dir())
            available._logged = True  # type: ignore[attr-defined]
        return False
    return True


def unavailable_reason() -> str | None:
    """``None`` when the kernels load, else why not."""
    return None if available() else _error


def use(impl: str, supported: bool, need: str, name: str = "impl") -> bool:
    """Whether an op runs its native kernel: ``impl`` (an :data:`IMPLS` value, the op's
    argument ``name``) ``"native"`` requires it (``ValueError`` naming ``need`` when the
    inputs are not ``supported``, :class:`NativeUnavailableError` when the kernels cannot be
    built), ``"auto"`` takes it when ``supported`` and :func:`available`, ``"eager"``
    never does."""
    if impl not in IMPLS:
        raise ValueError(f"unknown {name} {impl!r}; choose one of {list(IMPLS)}")
    if impl == "native":
        if not supported:
            raise ValueError(f"{name}='native' needs {need}")
        load()  # raises with the reason
        return True
    return impl == "auto" and supported and available()
