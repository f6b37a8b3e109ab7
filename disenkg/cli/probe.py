"""``python -m disenkg.cli.probe [--refresh]``: this CPU's GEMM throughput per dtype (the
capability probe of :mod:`disenkg.ops.probe`, cached per machine) and what ``auto``
precision takes on it."""

from __future__ import annotations

import argparse

from disenkg.ops import probe as probe_mod

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refresh", action="store_true",
                   help="probe again and replace this machine's cached result")
    a = p.parse_args(argv)
    path = probe_mod.cache_dir() / probe_mod.CACHE_FILE
    if a.refresh:
        probe_mod.forget()
    result = probe_mod.probe()
    if result is None:
        print("DISENKG_PROBE=off: auto precision follows the feature flags",
              probe_mod.feature_flags())
    else:
        print(f"{result.key}\n{result.describe()}\nflags {result.flags}; cached in {path}")
    print(f"auto precision on this CPU: {'bf16' if probe_mod.bf16_pays(result) else 'fp32'}")


if __name__ == "__main__":
    main()
