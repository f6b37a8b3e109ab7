"""One training epoch of the VGAE's exact all-pairs reconstruction loss on synthetic graphs:
through the fused op (memory linear in N) against the dense N x N computation.

    python experiments/bench_recon.py [--sizes 10000 100000 300000] [--dense-max 20000]

Graphs are stochastic block models made here (``--blocks`` communities of equal size, each
node with ``--degree-in`` edges inside its community and ``--degree-out`` outside, on
average), with ``--features`` Gaussian features plus a community signal. One epoch = the
variational GAT encoder forward, the loss, backward and an Adam step. Each (size, method)
runs in its own process, so its peak RSS is its own; the dense method runs only up to
``--dense-max`` nodes (its logits alone are 4 N^2 bytes: 40 GB at 100 000 nodes). Prints
one JSON line per run: nodes, edges, method, seconds, peak_rss_mb, loss.
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


def sbm(n: int, blocks: int, d_in: float, d_out: float, feats: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    comm = torch.arange(n) * blocks // n  # contiguous equal blocks
    size = n // blocks
    m_in, m_out = int(n * d_in / 2), int(n * d_out / 2)
    src_in = torch.randint(0, n, (m_in,), generator=g)
    dst_in = comm[src_in] * size + torch.randint(0, size, (m_in,), generator=g)
    src_out = torch.randint(0, n, (m_out,), generator=g)
    dst_out = torch.randint(0, n, (m_out,), generator=g)
    ei = torch.stack([torch.cat([src_in, src_out]), torch.cat([dst_in, dst_out]).clamp_max(n - 1)])
    ei = ei[:, ei[0] != ei[1]]
    centers = torch.randn(blocks, feats, generator=g)
    x = centers[comm] + torch.randn(n, feats, generator=g)
    return x, ei


def one(a: argparse.Namespace, n: int, method: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch_geometric.utils import to_undirected

    from disenkg.nn.encoders import VariationalGATEncoder
    from disenkg.nn.reconstruction import full_reconstruction_loss, reconstruction_targets

    torch.manual_seed(0)
    x, ei = sbm(n, a.blocks, a.degree_in, a.degree_out, a.features, seed=0)
    ei = to_undirected(ei, num_nodes=n)
    enc = VariationalGATEncoder(in_channels=a.features, hidden_channels=8, heads=8,
                                out_channels=a.latent)
    opt = torch.optim.Adam(enc.parameters(), lr=0.01)
    pos = reconstruction_targets(ei, n)
    t0 = time.perf_counter()
    mu, logstd = enc(x, ei)
    z = enc.sample(mu, logstd)
    if method == "op":
        loss = full_reconstruction_loss(z, pos)
    else:
        A = torch.zeros(n, n)
        A[pos[0], pos[1]] = 1.0
        E = float(pos[0].numel())
        w = (n * n - E) / E
        loss = n * n / (2 * (n * n - E)) * F.binary_cross_entropy_with_logits(
            z @ z.T, A, pos_weight=torch.tensor(w))
    loss = loss + enc.kl(mu, logstd) / n
    opt.zero_grad()
    loss.backward()
    opt.step()
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"nodes": n, "edges": int(ei.shape[1]) // 2, "method": method,
            "seconds": round(secs, 2), "peak_rss_mb": round(rss), "loss": float(loss.detach())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000],
                   help="numbers of nodes")
    p.add_argument("--dense-max", type=int, default=20_000,
                   help="largest graph the dense N x N method runs on")
    p.add_argument("--blocks", type=int, default=50, help="SBM communities")
    p.add_argument("--degree-in", type=float, default=8.0, help="mean edges inside")
    p.add_argument("--degree-out", type=float, default=2.0, help="mean edges outside")
    p.add_argument("--features", type=int, default=32, help="node feature size")
    p.add_argument("--latent", type=int, default=16, help="latent size")
    p.add_argument("--one", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a, int(a.one[0]), a.one[1])), flush=True)
        return
    base = [sys.executable, __file__, "--blocks", str(a.blocks), "--degree-in",
            str(a.degree_in), "--degree-out", str(a.degree_out), "--features",
            str(a.features), "--latent", str(a.latent)]
    for n in a.sizes:
        for method in ("op", "dense"):
            if method == "dense" and n > a.dense_max:
                print(json.dumps({"nodes": n, "method": "dense", "skipped":
                                  f"the logits alone would take {4 * n * n / 2**30:.1f} GiB"}),
                      flush=True)
                continue
            subprocess.run([*base, "--one", str(n), method], check=True)


if __name__ == "__main__":
    main()
