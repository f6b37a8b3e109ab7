"""Command line: ``python -m disenkg.run [COMMAND] ...`` (``link`` is the default).

Commands:
  link      train and evaluate a link-prediction model (the default)
  node      node classification, VGAE link prediction, array tasks
  predict   rank entities for (head, relation, ?) or (?, relation, tail) with a trained run
  score     the model's probability of given triples
  evaluate  re-run the filtered evaluation of a trained run
  export    entity / relation embeddings and names as .npy + .tsv
  inspect   component attention per relation; an entity's edge attention
  plot      learning curves (and DisenKGAT's relation x component attention) as PNG
  complete  the top-k answers of every (entity, relation) query, streamed to TSV / Parquet
  tune      hyper-parameter search on Optuna: trials as run directories, resumable, pruned

Run ``python -m disenkg.run COMMAND --help`` for the flags of a command. Errors in your
input are printed as one line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import difflib
import sys

from disenkg.hugepages import enable_huge_pages

__all__ = ["main"]

enable_huge_pages()  # before anything imports torch; THP_MEM_ALLOC_ENABLE=0 opts out

TASKS = ("link", "node", "tune")
USE_COMMANDS = ("predict", "score", "evaluate", "export", "inspect", "plot", "complete")
COMMANDS = TASKS + USE_COMMANDS


def _debug(argv: list[str]) -> bool:
    if "--debug" in argv:
        return True
    for i, a in enumerate(argv):
        if a == "--log-level" and i + 1 < len(argv) and argv[i + 1].upper() == "DEBUG":
            return True
        if a.startswith("--log-level=") and a.split("=", 1)[1].upper() == "DEBUG":
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}"
              + (f" (did you mean {close[0]!r}?)" if close else ""), file=sys.stderr)
        return 2
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "link"
    from disenkg.errors import UserError

    try:
        _dispatch(command, argv)
    except UserError as err:
        if _debug(argv):
            raise
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 2
    return 0


def _dispatch(command: str, argv: list[str]) -> None:
    if command == "link":
        from disenkg.cli.link import main as link_main

        link_main(argv)
    elif command == "tune":
        from disenkg.cli.tune import main as tune_main

        tune_main(argv)
    elif command == "node":
        from disenkg.cli.node import main as node_main

        node_main(argv)
    else:
        from disenkg.cli.use import main as use_main

        use_main(command, argv)


if __name__ == "__main__":
    sys.exit(main())
