"""PyKEEN's ``predict_all`` on FB15k-237 with a ConvE of the package's size, timed on a
slice of its queries and extrapolated to every query in both directions (issue 32's side
by side with ``bench_complete.py``).

PyKEEN is not a dependency: install it in its own environment and point ``--python`` at
it (the package's own environment is not touched)::

    python -m venv /tmp/pykeen-venv
    /tmp/pykeen-venv/bin/pip install torch==2.13.0 pykeen==1.11.1
    python experiments/bench_pykeen_complete.py --python /tmp/pykeen-venv/bin/python

``predict_all(model, k=K, batch_size=B)`` scores every ``(h, r, ?)`` query against all
entities through a ``DataLoader`` and keeps the ``k`` best *triples overall*
(``TopKScoreConsumer``): less output than a per-query top-k, the same scoring work. This
script runs PyKEEN's own loop (``consume_scores`` with a ``TopKScoreConsumer``) over the
first ``--queries`` tail queries of ``AllPredictionDataset`` (the dataset ``predict_all``
builds), for ``predict_all``'s default ``batch_size=1`` and for ``--batch-size``, and
extrapolates each to the 14 541 x 237 x 2 queries of both directions (head queries through
the inverse relations cost the same for ConvE). The model is untrained (the time does not
depend on the weights), in evaluation mode, 200-d, 32 3x3 filters, a 20 x 20 input image:
the README's ConvE configuration. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchlib import cpu_name

CHILD = r"""
import json, sys, tarfile, time
import numpy as np, torch
from pykeen.models import ConvE
from pykeen.predict import AllPredictionDataset, TopKScoreConsumer, consume_scores
from pykeen.triples import TriplesFactory

data, queries, batch_sizes, k = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with tarfile.open(data) as tar:
    lines = tar.extractfile("FB15k-237/train.txt").read().decode().splitlines()
triples = np.array([l.split("\t") for l in lines if l.strip()], dtype=str)
tf = TriplesFactory.from_labeled_triples(triples, create_inverse_triples=True)
torch.manual_seed(0)
model = ConvE(triples_factory=tf, embedding_dim=200, output_channels=32,
              embedding_height=10, embedding_width=20, random_seed=0)
model.eval()


class Slice(torch.utils.data.Subset):
    target = "tail"


full = AllPredictionDataset(num_entities=model.num_entities,
                            num_relations=model.num_real_relations, target="tail")
out = {"entities": model.num_entities, "relations": model.num_real_relations,
       "torch_threads": torch.get_num_threads()}
for bs in [int(b) for b in batch_sizes.split(",")]:
    n = queries if bs > 1 else max(1, queries // 10)  # batch size 1 is slow: a tenth
    ds = Slice(full, range(n))
    consumer = TopKScoreConsumer(k=k, device=model.device)
    with torch.inference_mode():
        t = time.perf_counter()
        consume_scores(model, ds, consumer, batch_size=bs)
        consumer.finalize()
        sec = time.perf_counter() - t
    out[f"batch_size_{bs}"] = {"queries": n, "seconds": sec, "queries_per_second": n / sec}
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", required=True,
                   help="the Python of an environment with pykeen installed")
    p.add_argument("--data-dir", default="../shared/data/kg", help="holds FB15k-237.tar.gz")
    p.add_argument("--queries", type=int, default=20_000,
                   help="tail queries timed per batch size (a tenth for batch size 1)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="predict_all's batch_size besides its default 1")
    p.add_argument("--top-k", type=int, default=10, help="predict_all's k")
    a = p.parse_args()
    data = os.path.join(a.data_dir, "FB15k-237.tar.gz")
    res = subprocess.run([a.python, "-c", CHILD, data, str(a.queries), f"1,{a.batch_size}",
                          str(a.top_k)], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"the PyKEEN child failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    full = r["entities"] * r["relations"] * 2
    version = subprocess.run([a.python, "-c", "import importlib.metadata as m; "
                              "print(m.version('pykeen'))"], capture_output=True,
                             text=True).stdout.strip()
    for key in [k for k in r if k.startswith("batch_size_")]:
        r[key]["full_seconds_estimate"] = round(full / r[key]["queries_per_second"])
    r.update(pykeen=version, full_queries=full, cpu=cpu_name())
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
