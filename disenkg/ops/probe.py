r"""What this CPU measurably does with matrix products: a short capability probe, cached per
machine, behind ``auto`` precision.

A feature flag says what an instruction set has, not what the GEMM library makes of it:
oneDNN may run bfloat16 products through AMX tiles, AVX512-BF16 dot products or, without
either, a conversion to float32 that is slower than float32 itself. The probe times
:data:`PROBE_SHAPES` (one square product and the scoring head's shape class: a long, thin
left factor against a small inner dimension) in float32 and in bfloat16 and reports each as
GFLOPS, :math:`2mkn / t`, with :math:`t` the median of up to :data:`REPEATS` timed products
after a warm-up (fewer once :data:`TIME_CAP` seconds are spent; a dtype whose warm-up alone
takes that long, one without a fast kernel, is measured by its warm-up). ``auto`` takes
bfloat16 where it is at least :data:`BF16_GAIN` times as fast as float32 on every shape
(:func:`bf16_pays`).

It also chooses the conv head's cache tile (:func:`tile_rows`, the patch rows its passes run
in, :mod:`disenkg.ops.conv_head.buffers`): the head's forward tile pass (patches, the
convolution GEMM, the ReLU epilogue) on :data:`TILE_PROBE_IMAGES` images of the InteractE
default (20 x 20, padded, 9 x 9 filters, 200 of them), timed for each of
:data:`TILE_CANDIDATES`,
in float32 and, where it pays, bfloat16; a larger tile is taken only when it is
:data:`TILE_GAIN` times as fast as every smaller one. The passes stream through the cache
or not depending on the CPU: on an AMD EPYC Zen 3 (fp32, L2 1 MiB) 4 096 rows made the
training step 0.86x as long as whole chunks; on an Intel Xeon with AMX (bf16, L2 2 MiB)
16 384 rows made it 0.91x as long as 4 096.

The result is cached in ``probe.json`` under :func:`~disenkg.utils.cache.cache_dir`
(``$DISENKG_CACHE``, else ``$XDG_CACHE_HOME/disenkg``, else ``~/.cache/disenkg``), keyed by
the CPU model, the number of threads PyTorch uses and the PyTorch version
(:func:`machine_key`): a probe runs once per machine and setting (about a second; never per
run); ``python -m disenkg.cli.probe [--refresh]`` prints (or re-measures) it.
``DISENKG_PROBE=off`` skips it, and ``auto`` then falls back to the feature flags (AMX-BF16
or AVX512-BF16). A cache file that cannot be read as a probe result is reported (warning
naming it) and replaced by a fresh probe; a cache that cannot be written leaves the result
in memory for this process.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from disenkg.utils.cache import cache_dir

__all__ = ["BF16_GAIN", "DEFAULT_TILE_ROWS", "PROBE_SHAPES", "REPEATS", "TILE_CANDIDATES",
           "TILE_GAIN", "ProbeResult", "bf16_pays", "cache_dir", "cpu_model", "feature_flags",
           "forget", "machine_key", "probe", "run_probe", "tile_rows"]

logger = logging.getLogger(__name__)

#: the products timed, (m, k, n): square, and the conv head's class (long and thin)
PROBE_SHAPES = ((512, 512, 512), (4096, 96, 256))
#: timed products per shape and dtype (after one warm-up), fewer past TIME_CAP seconds
REPEATS = 5
TIME_CAP = 0.2
#: bfloat16 must be this much faster than float32 on every shape for ``auto`` to take it
BF16_GAIN = 1.25
#: the conv head's tile sizes tried (patch rows), and the one without a probe
TILE_CANDIDATES = (4096, 16384, 65536)
DEFAULT_TILE_ROWS = 4096
#: a larger tile must be this much faster than every smaller one
TILE_GAIN = 1.05
#: images of the tile probe (400 positions each)
TILE_PROBE_IMAGES = 160
#: bump when the probe's method changes (older cached results are probed again)
PROBE_VERSION = 2
CACHE_FILE = "probe.json"


@dataclass(frozen=True)
class ProbeResult:
    """One machine's measured GEMM throughput.

    Attributes:
        key: :func:`machine_key` of the machine it was measured on.
        gflops: per dtype name (``float32``, ``bfloat16``), GFLOPS per shape of
            :data:`PROBE_SHAPES`, in that order.
        seconds: how long the probe took.
        flags: the CPU's bfloat16 matrix features as PyTorch reports them (information).
        tile_seconds: per dtype name, the conv head's tile pass for each of
            :data:`TILE_CANDIDATES` (seconds; float32, and bfloat16 where it pays).
    """

    key: str
    gflops: dict[str, list[float]]
    seconds: float
    flags: dict[str, bool]
    tile_seconds: dict[str, list[float]] = field(default_factory=dict)

    def tile_rows(self, dtype: str) -> int:
        """The tile for ``dtype`` (a name): the smallest candidate, unless a larger one is
        :data:`TILE_GAIN` times as fast as every smaller one; :data:`DEFAULT_TILE_ROWS`
        where it was not measured."""
        times = self.tile_seconds.get(dtype)
        if not times:
            return DEFAULT_TILE_ROWS
        best = 0
        for i in range(1, len(times)):
            if all(times[i] * TILE_GAIN <= t for t in times[:i]):
                best = i
        return TILE_CANDIDATES[best]

    def describe(self) -> str:
        parts = [f"{d} " + "/".join(f"{g:.0f}" for g in v) for d, v in self.gflops.items()]
        tiles = "; conv head tile rows: " + ", ".join(
            f"{d} {self.tile_rows(d)}" for d in self.tile_seconds) if self.tile_seconds else ""
        return f"GEMM GFLOPS ({' / '.join('x'.join(map(str, s)) for s in PROBE_SHAPES)}): " \
               + ", ".join(parts) + tiles


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key() -> str:
    """What a cached result is valid for: CPU model, PyTorch's threads, PyTorch version."""
    return (f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
            f" | probe {PROBE_VERSION}")


def _flags() -> dict[str, bool]:
    caps = getattr(torch._C._cpu, "_get_cpu_capability", None)
    found = caps() if caps is not None else {}
    return {k: bool(found.get(k)) for k in ("amx_bf16", "avx512_bf16")}


def _gflops(m: int, k: int, n: int, dtype: torch.dtype) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)  # warm-up: oneDNN's kernel selection and packing
    times, spent = [], time.perf_counter() - t0
    if spent > TIME_CAP:  # a dtype without a fast kernel: its warm-up is the measure
        times.append(spent)
    while len(times) < REPEATS and spent <= TIME_CAP:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return 2.0 * m * k * n / max(statistics.median(times), 1e-9) / 1e9


def _tile_seconds(rows: int, dtype: torch.dtype) -> float:
    """The conv head's forward tile pass over :data:`TILE_PROBE_IMAGES` images in tiles of
    ``rows`` patch rows: median of :data:`REPEATS` after a warm-up."""
    from disenkg.ops.patches import patches, positions, relu_mask_

    k, side, C = 9, 28, 200  # a 20 x 20 image padded circularly for 9 x 9 filters
    images = TILE_PROBE_IMAGES
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, side, side, generator=g).to(dtype)
    L = positions(x, k)
    per = max(1, rows // L)
    filters = torch.randn(C, k * k + 1, generator=g).to(dtype)
    cols = torch.empty(per * L, k * k + 1, dtype=dtype)
    maps = torch.empty(per * L * C, dtype=dtype)

    def tile_pass():
        for s in range(0, images, per):
            n = min(images, s + per) - s
            c = patches(x[s:s + n], k, out=cols[:n * L])
            z = maps[:n * L * C].view(n * L, C)
            torch.mm(c, filters.t(), out=z)
            relu_mask_(z.view(n, L, C), None)

    tile_pass()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        tile_pass()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_probe() -> ProbeResult:
    """Measures this machine now (no cache)."""
    t0 = time.perf_counter()
    gflops = {str(d).removeprefix("torch."): [round(_gflops(*s, d), 1) for s in PROBE_SHAPES]
              for d in (torch.float32, torch.bfloat16)}
    flags = _flags()
    partial = ProbeResult(key=machine_key(), gflops=gflops, seconds=0.0, flags=flags)
    dtypes = [torch.float32] + ([torch.bfloat16] if bf16_pays(partial) else [])
    tiles = {str(d).removeprefix("torch."): [round(_tile_seconds(r, d), 6)
                                             for r in TILE_CANDIDATES] for d in dtypes}
    return ProbeResult(key=machine_key(), gflops=gflops,
                       seconds=round(time.perf_counter() - t0, 3), flags=flags,
                       tile_seconds=tiles)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        for rec in data.values():
            ProbeResult(**rec)  # every entry must be a result
        return data
    except (OSError, ValueError, TypeError) as err:
        logger.warning("%s is not a probe cache (%s); probing again and replacing it",
                       path, err)
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        logger.info("the probe's result stays in memory: cannot write %s (%s)", path,
                    err.strerror or err)
        if tmp.exists():
            tmp.unlink()


@lru_cache(maxsize=1)
def _probe(key: str, where: str) -> ProbeResult:
    path = Path(where) / CACHE_FILE
    data = _read(path)
    if key in data:
        return ProbeResult(**data[key])
    result = run_probe()
    logger.info("probed this CPU (%s) in %.2f s: %s; cached in %s", key, result.seconds,
                result.describe(), path)
    _write(path, {**data, key: asdict(result)})
    return result


def forget() -> None:
    """Drops this machine's cached result (file and memory): the next :func:`probe`
    measures again."""
    path = cache_dir() / CACHE_FILE
    data = _read(path)
    if data.pop(machine_key(), None) is not None:
        _write(path, data)
    _probe.cache_clear()


def feature_flags() -> dict[str, bool]:
    """The CPU's bfloat16 matrix features as PyTorch reports them."""
    return _flags()


def probe() -> ProbeResult | None:
    """This machine's probe result (cached; ``None`` under ``DISENKG_PROBE=off``)."""
    if os.environ.get("DISENKG_PROBE", "").lower() in ("off", "0", "no", "false"):
        return None
    return _probe(machine_key(), str(cache_dir()))


def bf16_pays(result: ProbeResult | None = None) -> bool:
    """Whether bfloat16 products are at least :data:`BF16_GAIN` times as fast as float32 on
    every probed shape (``result`` defaults to :func:`probe`; without a probe, the feature
    flags AMX-BF16 / AVX512-BF16 decide)."""
    result = probe() if result is None else result
    if result is None:
        flags = _flags()
        return flags["amx_bf16"] or flags["avx512_bf16"]
    fp32, bf16 = result.gflops["float32"], result.gflops["bfloat16"]
    return all(b >= BF16_GAIN * f for f, b in zip(fp32, bf16))


def tile_rows(dtype: torch.dtype) -> int:
    """Patch rows per cache tile of the conv head for ``dtype`` on this CPU: the probe's
    choice (:meth:`ProbeResult.tile_rows`), else :data:`DEFAULT_TILE_ROWS` (the probe off,
    or a dtype it did not measure)."""
    result = probe()
    if result is None:
        return DEFAULT_TILE_ROWS
    return result.tile_rows(str(dtype).removeprefix("torch."))
