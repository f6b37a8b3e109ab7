"""``python -m disenkg.run complete``: the top-k answers of every (entity, relation) query
of a trained run, streamed to a TSV (or Parquet) file (:mod:`disenkg.runs.complete`).

An interrupted completion continues with ``--resume``: ``OUTPUT.progress.json`` records
the relations finished and the output's size at that point; the output is cut back to it
and the next relation starts. The settings must match the interrupted ones.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from disenkg.cli.values import argtype, integer
from disenkg.config.rules import fraction
from disenkg.errors import ConfigError, UserError
from disenkg.runs.complete import COMPLETION_BATCH, DIRECTIONS, complete, open_writer
from disenkg.runs.trained import FILTERS
from disenkg.utils.io import atomic_write_text

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, metavar="FILE",
                   help="TSV (header: head relation tail direction rank score) or, ending "
                        "in .parquet, Parquet (needs the 'parquet' extra)")
    p.add_argument("--top-k", type=integer(1), default=10, help="answers per query")
    p.add_argument("--direction", default="both", choices=list(DIRECTIONS),
                   help="tail: answers of (e, r, ?); head: of (?, r, e); both (tail, then "
                        "head, per relation)")
    p.add_argument("--relations", nargs="+", metavar="NAME",
                   help="only these relations (default: all, in id order)")
    p.add_argument("--entities", metavar="FILE",
                   help="only queries about these entities (one name per line)")
    p.add_argument("--filter", default="known", choices=list(FILTERS),
                   help="known: drop answers known from train/valid/test; none: keep them")
    p.add_argument("--min-probability", type=argtype(fraction), default=None,
                   help="drop answers whose probability is below this")
    p.add_argument("--batch-size", type=integer(1), default=COMPLETION_BATCH,
                   help="queries scored at once")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted completion of the same settings")


def _names(path: str, run) -> list[int]:
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--entities {path}: cannot read: {err}") from err
    return [run.entity_id(n.strip(" \t\r")) for n in lines if n.strip(" \t\r")]


def run(a: argparse.Namespace, trained) -> None:
    out = Path(a.output)
    progress = out.with_name(out.name + ".progress.json")
    rels = ([trained.relation_id(r) for r in a.relations] if a.relations
            else list(range(trained.dataset.num_relations)))
    ents = _names(a.entities, trained) if a.entities else None
    settings = {"run_dir": str(Path(a.run_dir).resolve()), "top_k": a.top_k,
                "direction": a.direction, "relations": rels, "entities": ents,
                "filter": a.filter, "min_probability": a.min_probability,
                "checkpoint": a.checkpoint}
    start = 0
    if a.resume and progress.is_file():
        state = json.loads(progress.read_text())
        if state.get("settings") != settings:
            raise ConfigError(f"--resume: {progress} records other settings than these; "
                              "give the interrupted command's flags")
        start = int(state["relations_done"])
        with open(out, "r+b") as fh:
            fh.truncate(int(state["bytes"]))
    elif out.exists() and not a.resume:
        raise UserError(f"--output {out} exists", hint="remove it, or pass --resume to "
                                                       "continue an interrupted completion")
    writer = open_writer(out, entity_names=trained.dataset.entities,
                         relation_names=trained.dataset.relations, append=start > 0)
    per_rel = (len(ents) if ents is not None else trained.dataset.num_entities) * (
        2 if a.direction == "both" else 1)
    bar = tqdm(total=per_rel * len(rels), initial=per_rel * start, unit="query",
               desc="complete", disable=a.no_progress)
    done = start
    try:
        for batch in complete(trained, k=a.top_k, direction=a.direction, relations=rels,
                              entities=ents, filter=a.filter,
                              min_probability=a.min_probability, batch_size=a.batch_size,
                              start_relation=start, progress=bar.update):
            writer.write(batch)
            if batch.last:
                done += 1
                atomic_write_text(json.dumps({"settings": settings, "relations_done": done,
                                              "bytes": writer.tell()}), progress)
    finally:
        writer.close()
        bar.close()
    os.unlink(progress)
    print(f"{out}: the top {a.top_k} answers of {per_rel * len(rels)} queries")
