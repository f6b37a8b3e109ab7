"""On paper: DisenKGAT's memory and halo traffic per rank for large KGs and many ranks.

From a ``bench_distributed.py --model disenkgat`` result (S-shard runs on the synthetic
KG, for at least two S), the training step's memory per rank above its ready state is
fitted as

.. math::
    M = a\\,n + b\\,H + c\\,E_s

(``n`` own entities, ``H`` halo rows, ``E_s`` edges received, with self loops; ``c`` is
counted, not fitted: the five ``(E, K)`` float tensors of the edge softmax, its dropout's
output (the counter-based mask is not stored) and the gradients, plus the int64 indices and
CSR orders and the kernels' int32 copies of each side's endpoints and relations,
``20 K + 80`` bytes an edge). ``a`` and
``b`` are split into the base embedding's gradient and Adam moments (``12 d_0`` bytes an
own row, plus ``4 d_0`` for the parameter itself) and multiples of a ``K x F`` float row,
which scale to other widths. A KG is then described by its entities, triples (messages
both ways: ``2 x`` triples edges) and a Zipf-like popularity (exponent 0.7, as the
synthetic KG; ``halo_sizes.py`` gives a real graph's halos), the halo by the closed
form of ``halo_sizes.expected_halo`` (ids unrelated to the graph, ``--partition range``),
and the traffic per step by ``3 H`` rows of ``4 K F`` bytes (the training pass's rows, their
gradients back, and the MI estimator's fresh pass) per layer, ``4 H`` when the bench ran
with ``--halo-recompute`` (its default, as a run's: the rows again in backward; a bench
result without the key held them). Fixed costs (interpreter,
torch, a CUDA context, the dataset) are left out. Prints one JSON line (``--out``: indented).

    python experiments/shard_estimates.py \
        --bench experiments/results/bench_distributed_disenkgat.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from benchlib import emit
from halo_sizes import expected_halo

#: (name, entities, triples) of the KGs estimated by default
KGS = (("FB15k-237", 14_541, 272_115), ("ogbl-wikikg2", 2_500_604, 16_109_182),
       ("Freebase-86M", 86_054_151, 338_586_276))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="a bench_distributed.py --model disenkgat JSON")
    p.add_argument("--components", type=int, default=3, help="K of the estimate")
    p.add_argument("--channels", type=int, default=200, help="F of the estimate")
    p.add_argument("--init-dim", type=int, default=100)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument("--kgs", nargs="+", default=[k[0] for k in KGS],
                   choices=[k[0] for k in KGS], help="the KGs to estimate")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def edge_bytes(K: int) -> int:
    """Bytes an edge received costs in a training step (module docstring)."""
    return 20 * K + 80


def fit(bench: dict, init_dim: int) -> dict:
    """``a`` and ``b`` (bytes an own row and a halo row) from the bench's sharded ranks,
    and their ``K x F``-row multiples; ``one_process_residual_mb``: the fit against the
    one-process layout, which is not fitted (sharded ranks pin glibc's mmap threshold,
    :func:`disenkg.utils.memory.return_large_buffers`, one process keeps the default, so
    the two regimes differ by the heap one process keeps; the estimates are of ranks)."""
    K, F = bench["components"], bench["dim"]
    row = 4 * K * F
    c = edge_bytes(K)
    N = bench["entities"]
    # every edge of the graph: the edges the shards of one layout receive, together
    E = next(sum(r["local_edges"] for r in ranks) for ranks in bench["layouts"].values()
             if "local_edges" in ranks[0])
    points, single = [], []  # (n, H, bytes above ready, less the edges)
    for ranks in bench["layouts"].values():
        for r in ranks:
            n = r.get("entities_here", N)
            if "local_edges" in r:
                edges = r["local_edges"] + n
            else:  # one process: every edge and self loop
                edges = E + N
            (points if "local_edges" in r else single).append(
                (n, r.get("halo_rows", 0), (r["peak_mb"] - r["ready_mb"]) * 2**20 - c * edges))
    A = torch.tensor([[p[0], p[1]] for p in points], dtype=torch.float64)
    y = torch.tensor([p[2] for p in points], dtype=torch.float64)
    ab = torch.linalg.lstsq(A, y.unsqueeze(1)).solution.flatten()
    a, b = ab.tolist()
    own_rows = (a - 12 * init_dim) / row

    def residuals(pts):
        A = torch.tensor([[p[0], p[1]] for p in pts], dtype=torch.float64)
        y = torch.tensor([p[2] for p in pts], dtype=torch.float64)
        return [round(float(v) / 2**20, 1) for v in A @ ab - y]

    return {"a_bytes": round(a), "b_bytes": round(b), "own_rows_kf": round(own_rows, 2),
            "halo_rows_kf": round(b / row, 2), "edge_bytes": c,
            "residual_mb": residuals(points),
            "one_process_residual_mb": residuals(single) if single else []}


def zipf_out_degrees(entities: int, edges: int, exponent: float = 0.7) -> torch.Tensor:
    """Expected out-degrees of a KG whose endpoints follow ``1 / rank^exponent``."""
    w = 1.0 / torch.arange(1, entities + 1, dtype=torch.float64) ** exponent
    return edges * w / w.sum()


def estimate(entities: int, triples: int, costs: dict, a: argparse.Namespace,
             passes: int = 3) -> dict:
    """Memory and traffic per rank (module docstring); ``passes``: halo exchanges of
    ``H`` rows per layer and step."""
    K, F, d0, L = a.components, a.channels, a.init_dim, a.layers
    row = 4 * K * F
    edges = 2 * triples
    degrees = zipf_out_degrees(entities, edges)
    out = {"entities": entities, "triples": triples, "ranks": {}}
    for S in [1, *a.ranks]:
        n = -(-entities // S)
        H = expected_halo(degrees, S) if S > 1 else 0.0
        E_s = edges / S + n
        mem = (n * (16 * d0 + costs["own_rows_kf"] * row * L)
               + H * costs["halo_rows_kf"] * row * L + E_s * costs["edge_bytes"] * L)
        out["ranks"][str(S)] = {"own": n, "halo": round(H), "halo_over_own": round(H / n, 2),
                                "memory_gb": round(mem / 2**30, 2),
                                "traffic_gb_per_step": round(passes * H * row * L / 2**30, 3)}
    return out


def main(argv: list[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    bench = json.loads(Path(a.bench).read_text())
    costs = fit(bench, a.init_dim)
    passes = 4 if bench.get("halo_recompute", False) else 3
    res = {"from": a.bench, "K": a.components, "F": a.channels, "init_dim": a.init_dim,
           "layers": a.layers, "costs": costs, "halo_passes": passes,
           "kgs": {name: estimate(n, t, costs, a, passes) for name, n, t in KGS
                   if name in a.kgs}}
    return emit(res, a.out)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
