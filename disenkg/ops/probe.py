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

The result is cached in ``probe.json`` under :func:`cache_dir` (``$DISENKG_CACHE_DIR``, else
``$XDG_CACHE_HOME/disenkg``, else ``~/.cache/disenkg``), keyed by the CPU model, the number
of threads PyTorch uses and the PyTorch version (:func:`machine_key`): a probe runs once per
machine and setting (about a second; never per run); ``python -m disenkg.cli.probe
[--refresh]`` prints (or re-measures) it. ``DISENKG_PROBE=off`` skips it, and
``auto`` then falls back to the feature flags (AMX-BF16 or AVX512-BF16). A cache file that
cannot be read as a probe result is reported (warning naming it) and replaced by a fresh
probe; a cache that cannot be written leaves the result in memory for this process.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["BF16_GAIN", "PROBE_SHAPES", "REPEATS", "ProbeResult", "bf16_pays", "cache_dir",
           "cpu_model", "feature_flags", "forget", "machine_key", "probe", "run_probe"]

logger = logging.getLogger(__name__)

#: the products timed, (m, k, n): square, and the conv head's class (long and thin)
PROBE_SHAPES = ((512, 512, 512), (4096, 96, 256))
#: timed products per shape and dtype (after one warm-up), fewer past TIME_CAP seconds
REPEATS = 5
TIME_CAP = 0.2
#: bfloat16 must be this much faster than float32 on every shape for ``auto`` to take it
BF16_GAIN = 1.25
#: bump when the probe's method changes (older cached results are probed again)
PROBE_VERSION = 1
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
    """

    key: str
    gflops: dict[str, list[float]]
    seconds: float
    flags: dict[str, bool]

    def describe(self) -> str:
        parts = [f"{d} " + "/".join(f"{g:.0f}" for g in v) for d, v in self.gflops.items()]
        return f"GEMM GFLOPS ({' / '.join('x'.join(map(str, s)) for s in PROBE_SHAPES)}): " \
               + ", ".join(parts)


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


def cache_dir() -> Path:
    """Where the probe's result is cached (see the module doc)."""
    if os.environ.get("DISENKG_CACHE_DIR"):
        return Path(os.environ["DISENKG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "disenkg"


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


def run_probe() -> ProbeResult:
    """Measures this machine now (no cache)."""
    t0 = time.perf_counter()
    gflops = {str(d).removeprefix("torch."): [round(_gflops(*s, d), 1) for s in PROBE_SHAPES]
              for d in (torch.float32, torch.bfloat16)}
    return ProbeResult(key=machine_key(), gflops=gflops,
                       seconds=round(time.perf_counter() - t0, 3), flags=_flags())


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

