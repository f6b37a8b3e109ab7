"""Native (C + OpenMP) kernels, compiled on first use and loaded with :mod:`ctypes`.

The sources ship with the package: ``edge_kernels.{c,h}`` (the DisenKGAT layer's edge
products, :mod:`disenkg.ops.edge_products`), ``patch_kernels.{c,h}`` (the convolutional
scorer head's im2col / col2im and ReLU-dropout epilogue, :mod:`disenkg.ops.patches`) and
``mixture_kernels.c`` (the element-wise tile of the chunked mixture BCE,
:mod:`disenkg.ops.mixture_bce.chunked`). The first call
to :func:`load` compiles them with the system C compiler (``$CC``, else ``cc``) into the
cache (``$DISENKG_CACHE/native``, default ``~/.cache/disenkg/native``) under a name hashed
from the sources, the flags and the CPU, written atomically so concurrent processes are
safe; later calls load the cached library. No torch headers are involved, so a build takes
about a second.

``DISENKG_NATIVE=0`` disables the kernels. :func:`available` says whether they can be used
(callers then fall back to the pure-PyTorch path) and :func:`unavailable_reason` why not;
:func:`load` raises :class:`NativeUnavailableError` with the compiler's message.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["IMPLS", "NativeUnavailableError", "available", "load", "unavailable_reason",
           "use"]

#: the ``impl`` choices of every op with a native kernel and a PyTorch path
IMPLS = ("auto", "native", "torch")

logger = logging.getLogger(__name__)

_SOURCE_DIR = Path(__file__).resolve().parent
_SOURCES = ("edge_kernels.c", "edge_kernels.h", "patch_kernels.c", "patch_kernels.h",
            "mixture_kernels.c")
# -fno-trapping-math: no kernel reads floating-point exception flags, and it lets the
# compiler if-convert and vectorise the polynomial exp / log of mixture_kernels.c
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno",
          "-fno-trapping-math")
_ABI_VERSION = 5

_lib: ctypes.CDLL | None = None
_error: str | None = None


class NativeUnavailableError(RuntimeError):
    """The native kernels are disabled or could not be built."""


def _cache_dir() -> Path:
    root = os.environ.get("DISENKG_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "disenkg") / "native"


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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = [compiler, *_FLAGS, "-o", tmp,
           *(str(_SOURCE_DIR / n) for n in _SOURCES if n.endswith(".c"))]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise NativeUnavailableError(
                f"building the native kernels failed ({' '.join(cmd)}):\n{res.stderr}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL:
    """Returns the loaded library, building it if needed (raises when unavailable)."""
    global _lib, _error
    if _lib is not None:
        return _lib
    if _error is not None:
        raise NativeUnavailableError(_error)
    try:
        if os.environ.get("DISENKG_NATIVE", "1") == "0":
            raise NativeUnavailableError("disabled by DISENKG_NATIVE=0")
        compiler = os.environ.get("CC", "cc")
        if shutil.which(compiler) is None:
            raise NativeUnavailableError(f"no C compiler {compiler!r} on PATH (set $CC)")
        h = hashlib.sha256()
        for name in _SOURCES:
            h.update((_SOURCE_DIR / name).read_bytes())
        h.update(" ".join((compiler, *_FLAGS, platform.machine(), _cpu_signature())).encode())
        target = _cache_dir() / f"disenkg_kernels-{h.hexdigest()[:16]}.so"
        if not target.exists():
            logger.info("building native kernels into %s", target)
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
        if lib.disenkg_abi_version() != _ABI_VERSION:
            raise NativeUnavailableError(f"{target} has a different ABI version")
    except (NativeUnavailableError, OSError) as exc:
        _error = str(exc)
        raise NativeUnavailableError(_error) from exc
    _declare(lib)
    _lib = lib
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        getattr(lib, f"edge_sddmm_{suffix}").argtypes = [p] * 6 + [i64] * 3 + [p, c_int]
        getattr(lib, f"edge_spmm_{suffix}").argtypes = [p] * 7 + [i64] * 3 + [p, p, i64, p,
                                                                             c_int]
        for name in ("edge_sddmm", "edge_spmm"):
            getattr(lib, f"{name}_{suffix}").restype = None
    for suffix in ("f32", "f64", "bf16"):
        getattr(lib, f"im2col_cl_{suffix}").argtypes = [p] + [i64] * 7 + [p, c_int]
        getattr(lib, f"col2im_cl_{suffix}").argtypes = [p] + [i64] * 5 + [p, c_int]
        getattr(lib, f"relu_mask_{suffix}").argtypes = [p, p] + [i64] * 3 + [c_int]
        getattr(lib, f"relu_mask_backward_{suffix}").argtypes = [p, p, i64, c_int]
        for name in ("im2col_cl", "col2im_cl", "relu_mask", "relu_mask_backward"):
            getattr(lib, f"{name}_{suffix}").restype = None
    lib.accumulate_bf16.argtypes = [p, p, i64, c_int]
    lib.accumulate_bf16.restype = None
    lib.mixture_bce_tile_f32.argtypes = [p, p, p] + [i64] * 3 + [ctypes.c_float] * 2 + [
        c_int, p, p, c_int]
    lib.mixture_bce_tile_f32.restype = None


def available() -> bool:
    """Whether :func:`load` succeeds (the reason is logged once at INFO level otherwise)."""
    try:
        load()
    except NativeUnavailableError as exc:
        if not getattr(available, "_logged", False):
            logger.info("native kernels unavailable, using PyTorch: %s", exc)
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
    built), ``"auto"`` takes it when ``supported`` and :func:`available`, ``"torch"``
    never does."""
    if impl not in IMPLS:
        raise ValueError(f"unknown {name} {impl!r}; choose one of {list(IMPLS)}")
    if impl == "native":
        if not supported:
            raise ValueError(f"{name}='native' needs {need}")
        load()  # raises with the reason
        return True
    return impl == "auto" and supported and available()
