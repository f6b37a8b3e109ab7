"""``python -m disenkg.run predict|score|evaluate|export|inspect|plot``: use a trained run.

Each command reads only a run directory (``--run-dir``), never the original dataset files,
and goes through :class:`~disenkg.runs.trained.TrainedRun` (the Python API).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from disenkg.cli.common import add_common_arguments, format_table, make_parser, pick_device
from disenkg.cli.common import setup_logging as _setup_logging
from disenkg.cli.values import integer
from disenkg.errors import ConfigError, RunDirError, UserError
from disenkg.runs.trained import FILTERS, TrainedRun, read_queries

__all__ = ["COMMANDS", "main"]


def _base(name: str, description: str) -> argparse.ArgumentParser:
    p = make_parser(f"python -m disenkg.run {name}", description)
    p.add_argument("--run-dir", required=True,
                   help="the run directory written by training (its --output-dir)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:N' or 'auto'")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which checkpoint of the run to use")
    add_common_arguments(p)
    return p


def _load(a: argparse.Namespace) -> TrainedRun:
    _setup_logging(a.log_level)
    return TrainedRun.load(a.run_dir, device=pick_device(a.device), checkpoint=a.checkpoint)


# ---------------------------------------------------------------------- predict
def _predict_parser() -> argparse.ArgumentParser:
    p = _base("predict", "Rank all entities as answers of (head, relation, ?) or "
                         "(?, relation, tail), by name.")
    p.add_argument("--head", help="rank tails of (HEAD, RELATION, ?)")
    p.add_argument("--tail", help="rank heads of (?, RELATION, TAIL)")
    p.add_argument("--relation", help="the relation's name")
    p.add_argument("--queries", metavar="FILE.tsv",
                   help="many queries: lines 'head<TAB>relation<TAB>?' or "
                        "'?<TAB>relation<TAB>tail'")
    p.add_argument("--top-k", type=integer(1), default=10, help="answers per query")
    p.add_argument("--filter", default="known", choices=list(FILTERS),
                   help="known: drop answers already known from train/valid/test; none: "
                        "keep them (marked known)")
    p.add_argument("--format", default="table", choices=["table", "json", "tsv"],
                   help="output format (json: a list per query of {entity, score, "
                        "probability, known})")
    return p


def _predict(a: argparse.Namespace) -> None:
    if a.queries:
        if a.head or a.tail or a.relation:
            raise ConfigError("--queries cannot be combined with --head / --tail / --relation")
        path = Path(a.queries)
        if not path.is_file():
            raise ConfigError(f"--queries: no such file {path}")
        queries = read_queries(path)
    else:
        if not a.relation or (a.head is None) == (a.tail is None):
            raise ConfigError("give --relation and exactly one of --head and --tail, or "
                              "--queries FILE.tsv")
        queries = [(a.head, a.relation, a.tail)]
    run = _load(a)
    results = run.predict(queries, k=a.top_k, filter=a.filter)
    if a.format == "json":
        print(json.dumps(results, indent=2))
        return
    if a.format == "tsv":
        print("query\thead\trelation\ttail\trank\tentity\tscore\tprobability\tknown")
        for qi, ((h, r, t), rows) in enumerate(zip(queries, results), 1):
            for rank, row in enumerate(rows, 1):
                print(f"{qi}\t{h or '?'}\t{r}\t{t or '?'}\t{rank}\t{row['entity']}\t"
                      f"{row['score']:.6g}\t{row['probability']:.6g}\t{row['known']}")
        return
    for (h, r, t), rows in zip(queries, results):
        print(f"({h or '?'}, {r}, {t or '?'})")
        width = max([len(x["entity"]) for x in rows] + [6])
        print(f"  {'rank':>4}  {'entity':<{width}}  {'score':>10}  {'probability':>11}  known")
        for rank, row in enumerate(rows, 1):
            print(f"  {rank:>4}  {row['entity']:<{width}}  {row['score']:>10.4f}  "
                  f"{row['probability']:>11.4f}  {'yes' if row['known'] else ''}")


# ---------------------------------------------------------------------- score
def _score_parser() -> argparse.ArgumentParser:
    p = _base("score", "The model's probability of each given triple.")
    p.add_argument("--triples", required=True, metavar="FILE.tsv",
                   help="lines 'head<TAB>relation<TAB>tail' (names)")
    p.add_argument("--format", default="tsv", choices=["tsv", "json"], help="output format")
    return p


def _score(a: argparse.Namespace) -> None:
    from disenkg.datasets.triples import parse_triples

    path = Path(a.triples)
    if not path.is_file():
        raise ConfigError(f"--triples: no such file {path}")
    triples = parse_triples(path.read_bytes(), str(path))
    run = _load(a)
    rows = run.score(triples)
    if a.format == "json":
        print(json.dumps(rows, indent=2))
        return
    print("head\trelation\ttail\tprobability\tscore")
    for r in rows:
        print(f"{r['head']}\t{r['relation']}\t{r['tail']}\t{r['probability']:.6g}\t"
              f"{r['score']:.6g}")


# ---------------------------------------------------------------------- evaluate
def _evaluate_parser() -> argparse.ArgumentParser:
    p = _base("evaluate", "Re-run the filtered evaluation of the run's model (both "
                          "directions, the run's rank type) and print the metrics.")
    p.add_argument("--split", default="test",
                   help="'test', 'valid', or a TSV file of named triples")
    p.add_argument("--batch-size", type=integer(1), default=None,
                   help="queries per scoring batch (default: the run's eval batch size)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return p


def _evaluate(a: argparse.Namespace) -> None:
    run = _load(a)
    m = run.evaluate(a.split, batch_size=a.batch_size, progress=not a.no_progress)
    if a.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_table({a.split: m}, splits=(a.split,)))


# ---------------------------------------------------------------------- export
def _export_parser() -> argparse.ArgumentParser:
    p = _base("export", "Write entity embeddings (per component), relation embeddings and "
                        "names as .npy and .tsv files (NumPy, pandas, embedding projector).")
    p.add_argument("--out", required=True, help="directory to write into (created)")
    return p


def export_embeddings(run: TrainedRun, out: Path) -> list[Path]:
    """Writes the files of ``export``; returns their paths. An ``out`` that is the run's own
    directory is refused (the exports' ``entities.tsv`` / ``relations.tsv`` would replace
    the run's)."""
    if out.exists() and out.resolve() == run.run_dir.path.resolve():
        raise RunDirError(f"export --out {out} is the run directory: its entities.tsv and "
                          "relations.tsv would replace the run's own",
                          hint="choose another --out, e.g. a subdirectory")
    emb = run.embeddings()
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, write: Callable[[Path], Any]) -> None:
        write(out / name)
        written.append(out / name)

    save("entity_embeddings.npy", lambda p: np.save(p, emb["entity"], allow_pickle=False))
    save("relation_embeddings.npy", lambda p: np.save(p, emb["relation"], allow_pickle=False))
    save("entities.tsv", lambda p: p.write_text("".join(f"{n}\n" for n in emb["entity_names"]),
                                                encoding="utf-8"))
    base = run.dataset.relations  # rows 0..R-1 forward, R..2R-1 their inverses: a
    # direction column, as a relation may itself be named "r^-1"
    save("relations.tsv", lambda p: p.write_text(
        "relation\tdirection\n" + "".join(f"{n}\tforward\n" for n in base)
        + "".join(f"{n}\tinverse\n" for n in base), encoding="utf-8"))
    ent = emb["entity"]
    blocks = ([ent[:, k] for k in range(ent.shape[1])] if ent.ndim == 3 else [ent])
    for k, block in enumerate(blocks):
        name = f"entity_vectors_component{k}.tsv" if ent.ndim == 3 else "entity_vectors.tsv"
        save(name, lambda p, b=block: np.savetxt(p, b, delimiter="\t", fmt="%.6g"))
    return written


def _export(a: argparse.Namespace) -> None:
    run = _load(a)
    for path in export_embeddings(run, Path(a.out)):
        print(path)


# ---------------------------------------------------------------------- inspect
def _inspect_parser() -> argparse.ArgumentParser:
    p = _base("inspect", "Show what the disentangled model learned: the component attention "
                         "of each relation, and with --entity its incoming edges' attention.")
    p.add_argument("--entity", help="also list this entity's neighbours with per-component "
                                    "edge attention")
    p.add_argument("--top", type=integer(1), default=20, help="neighbours to list")
    return p


def _inspect(a: argparse.Namespace) -> None:
    run = _load(a)
    att = run.component_attention()
    names = run.relation_names()
    K = att.shape[1]
    width = max(len(n) for n in names)
    print("component attention per relation (mean over its training queries)")
    print(f"{'relation':<{width}}  " + "  ".join(f"{'k=' + str(k):>6}" for k in range(K))
          + "  top")
    for n, row in zip(names, att):
        if np.isnan(row).all():
            continue
        print(f"{n:<{width}}  " + "  ".join(f"{v:>6.3f}" for v in row)
              + f"  {int(np.argmax(row)):>3}")
    if a.entity:
        rows = run.neighbours(a.entity)
        print(f"\nedges into {a.entity} (last layer, attention per component; "
              f"{len(rows)} edges, {min(a.top, len(rows))} shown)")
        for r in rows[:a.top]:
            print(f"  {r['relation']:<{width}}  {r['neighbour']:<30}  "
                  + "  ".join(f"{v:.3f}" for v in r["attention"]))


# ---------------------------------------------------------------------- plot
def _plot_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m disenkg.run plot",
                    "Draw the learning curves from history.csv (and DisenKGAT's relation x "
                    "component attention) as PNG files in the run directory. Needs "
                    "matplotlib (the 'plot' extra).")
    p.add_argument("--run-dir", required=True, help="the run directory")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: RUN_DIR)")
    p.add_argument("--device", default="cpu", help="device for the attention heat map")
    add_common_arguments(p)
    return p


def _plot(a: argparse.Namespace) -> None:
    from disenkg.runs.plot import plot_run

    _setup_logging(a.log_level)
    for path in plot_run(Path(a.run_dir), Path(a.out) if a.out else None,
                         device=pick_device(a.device)):
        print(path)


# ---------------------------------------------------------------------- complete
def _complete_parser() -> argparse.ArgumentParser:
    from disenkg.cli.complete import add_arguments

    p = _base("complete", "The top-k answers of every (entity, relation) query, both "
                          "directions, streamed to a file (completion of the whole KG).")
    add_arguments(p)
    return p


def _complete(a: argparse.Namespace) -> None:
    from disenkg.cli.complete import run

    run(a, _load(a))


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser],
                          Callable[[argparse.Namespace], None]]] = {
    "predict": (_predict_parser, _predict),
    "score": (_score_parser, _score),
    "evaluate": (_evaluate_parser, _evaluate),
    "export": (_export_parser, _export),
    "inspect": (_inspect_parser, _inspect),
    "plot": (_plot_parser, _plot),
    "complete": (_complete_parser, _complete),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    return COMMANDS[command][0]()


def main(command: str, argv: list[str]) -> None:
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}; choose one of {list(COMMANDS)}")
    make, run = COMMANDS[command]
    args = make().parse_args(argv)
    run(args)
    sys.stdout.flush()
