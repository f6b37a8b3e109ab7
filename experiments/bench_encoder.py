"""Benchmark the DisenKGAT encoder alone (forward + backward over the whole graph).

Compares the implementations of :class:`disenkg.nn.conv.DisenConv` in one process on the
same graph and weights: ``native`` (the fused schedule's C edge kernels), ``chunked``
(PyTorch edge chunks recomputed in backward) and optionally ``eager`` (all edges at once;
needs ~10 GB on FB15k-237). Default model setting (cross, dot_weight, K=3, F=200,
init_dim 100, 1 layer).
Prints one line per implementation and a final JSON line with medians and ratios to ``chunked``.

    python experiments/bench_encoder.py --dataset FB15k-237 --data-dir ../shared/data/kg \
        [--impls native,chunked,eager] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics
import time

from disenkg.hugepages import enable_huge_pages

enable_huge_pages()  # before torch is imported (see disenkg/hugepages.py)

from benchlib import dataset_parser  # noqa: E402


def main() -> None:
    p = dataset_parser(__doc__)
    p.add_argument("--impls", default="native,chunked",
                   help="comma-separated encoder impls among native, chunked, eager")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = p.parse_args()

    import torch

    from disenkg.datasets import KGDataset
    from disenkg.models import DisenKGAT
    from disenkg.nn.scorers import DistMultScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = KGDataset.load(args.dataset, data_dir=args.data_dir)
    ei, et = ds.graph()
    results = {}
    state = None
    for impl in args.impls.split(","):
        torch.manual_seed(0)
        model = DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                          edge_index=ei, edge_type=et, scorer=DistMultScorer(),
                          encoder_impl=impl, mi_estimator=None)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        fwd, bwd = [], []
        for r in range(args.repeats + 1):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(r)  # same dropout masks for every schedule
            t0 = time.perf_counter()
            x = model.encode().entity
            t1 = time.perf_counter()
            (x * x).sum().backward()
            t2 = time.perf_counter()
            if r:
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
        results[impl] = {"forward_s": round(statistics.median(fwd), 3),
                         "backward_s": round(statistics.median(bwd), 3)}
        results[impl]["total_s"] = round(results[impl]["forward_s"]
                                         + results[impl]["backward_s"], 3)
        print(f"{impl}: forward {results[impl]['forward_s']:.2f} s, backward "
              f"{results[impl]['backward_s']:.2f} s", flush=True)
    if "chunked" in results:
        base = results["chunked"]["total_s"]
        for r in results.values():
            r["speedup_vs_chunked"] = round(base / r["total_s"], 2)
    results["threads"] = torch.get_num_threads()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
