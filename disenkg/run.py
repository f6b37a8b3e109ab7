"""Command line: ``python -m disenkg.run [link|node] ...`` (``link`` is the default).

Run ``python -m disenkg.run link --help`` for the flags of a task.
"""

from __future__ import annotations

import sys

from disenkg.hugepages import enable_huge_pages

__all__ = ["main"]

enable_huge_pages()  # before anything imports torch; THP_MEM_ALLOC_ENABLE=0 opts out

TASKS = ("link", "node")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\ntasks: {', '.join(TASKS)}")
        return 0
    task = argv.pop(0) if argv and argv[0] in TASKS else "link"
    if task == "link":
        from disenkg.cli.link import main as link_main

        link_main(argv)
    else:
        from disenkg.cli.node import main as node_main

        node_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
