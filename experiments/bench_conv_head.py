"""Benchmark the conv scorers' head alone: InteractE at the FB15k-237 default (200 filters
of 9 x 9, 6144 images = batch 2048 x K 3), forward + backward, median of ``--repeats``
after a warm-up, per ``--head-impl``; prints one JSON line.

    python experiments/bench_conv_head.py [--impls auto,eager] [--repeats 5]
"""

from __future__ import annotations

import json
import statistics
import time

from disenkg.hugepages import enable_huge_pages

enable_huge_pages()  # before torch is imported (see disenkg/hugepages.py)

import argparse  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impls", default="auto", help="comma-separated head impls")
    p.add_argument("--images", type=int, default=6144, help="images per call")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after a warm-up")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    a = p.parse_args()

    import torch

    from disenkg.nn.scorers import InteractEInteraction

    res = {}
    for impl in a.impls.split(","):
        torch.manual_seed(0)
        m = InteractEInteraction(embedding_dim=200, num_filters=200, kernel_size=9,
                                 impl=impl, precision=a.precision if impl != "eager" else "fp32")
        h = torch.randn(a.images, 200, requires_grad=True)
        r = torch.randn(a.images, 200)
        times = []
        for i in range(a.repeats + 1):
            t0 = time.perf_counter()
            m(h, r).square().sum().backward()
            if i:
                times.append(time.perf_counter() - t0)
        res[impl] = {"seconds": round(statistics.median(times), 3),
                     "all": [round(t, 3) for t in times]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
