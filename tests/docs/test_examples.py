"""The documentation's examples run, so they cannot go stale.

* Every ``python -m disenkg.run ...`` command in README.md and docs/ (```bash and ```console
  blocks) is parsed by its command's own parser; link and tune commands are also resolved
  against the configuration rules (flags, --config files, presets; no data is read), so a
  renamed flag, a bad value or a setting that does not apply fails here.
* Every ```python block of a page runs, the page's blocks in order in one namespace, in a
  scratch directory holding ``runs/umls`` (a small UMLS run trained here) and links to the
  repository's ``experiments/``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO, kg_archive

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, first line, text)`` of each fenced block of ``path``."""
    out, lang, start, buf = [], None, 0, []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if m and lang is None:
            lang, start, buf = m.group(1), i + 1, []
        elif line.startswith("```") and lang is not None:
            out.append((lang, start, "\n".join(buf)))
            lang = None
        elif lang is not None:
            buf.append(line)
    return out


def commands() -> list[tuple[str, list[str]]]:
    """``(where, argv after 'python -m disenkg.run')`` of every documented command."""
    out = []
    for page in PAGES:
        for lang, start, text in blocks(page):
            if lang not in ("bash", "console"):
                continue
            joined = re.sub(r"\\\n\s*", " ", text)
            for j, line in enumerate(joined.splitlines()):
                line = line.strip().removeprefix("$ ")
                if not line.startswith("python -m disenkg.run"):
                    continue
                # pipes, redirections and a trailing & (a background job)
                line = line.split("|")[0].split(">")[0].strip().removesuffix("&")
                argv = shlex.split(line, comments=True)[3:]
                out.append((f"{page.relative_to(REPO)}:{start + j}", argv))
    return out


COMMANDS = commands()
#: file names that stand for the reader's own files or an earlier command's output
PLACEHOLDER = re.compile(r"path/to|PATH|MY_|\bDIR\b|X\.npy|E\.npy|Y\.npy|HOST|runs/")


def test_the_docs_have_commands_and_python_examples():
    assert len(COMMANDS) >= 10
    assert any(lang == "python" for p in PAGES for lang, _, _ in blocks(p))


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses_and_resolves(where, argv, monkeypatch):
    from disenkg.errors import UserError
    from disenkg.run import COMMANDS as NAMES

    monkeypatch.chdir(REPO)
    command = argv[0] if argv and argv[0] in NAMES else "link"
    args = argv[1:] if argv and argv[0] == command else argv
    if "--help" in args or "-h" in args:
        return
    try:
        if command in ("link", "tune"):
            from disenkg.cli.tune import split_args
            from disenkg.pipeline.config import LinkConfig

            if command == "link":
                from disenkg.cli.link import layers_from_argv

                layers, _ = layers_from_argv([a for a in args if a != "--print-config"])
            else:
                _, layers, _ = split_args(args)
            LinkConfig.resolve(layers)
        elif command == "node":
            from disenkg.cli.node import build_parser

            build_parser().parse_args(args)
        else:
            from disenkg.cli.use import build_parser

            build_parser(command).parse_args(args)
    except SystemExit as err:  # argparse's own error, already printed
        pytest.fail(f"{where}: python -m disenkg.run {shlex.join(argv)}: exit {err.code}")
    except UserError as err:
        if PLACEHOLDER.search(" ".join(argv)) and "no such file" in str(err):
            return  # a placeholder file name of the example
        pytest.fail(f"{where}: python -m disenkg.run {shlex.join(argv)}: {err}")


PY_PAGES = [p for p in PAGES if any(lang == "python" for lang, _, _ in blocks(p))]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory like a user's: ``runs/umls`` trained (small), ``experiments/`` linked."""
    import disenkg

    root = tmp_path_factory.mktemp("docs")
    (root / "experiments").symlink_to(REPO / "experiments")
    disenkg.train(dataset=str(kg_archive("umls")), output_dir=str(root / "runs" / "umls"),
                  epochs=2, no_progress=True, log_level="WARNING")
    return root


@pytest.mark.parametrize("page", PY_PAGES, ids=[str(p.relative_to(REPO)) for p in PY_PAGES])
def test_python_examples_run(page, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("DISENKG_DATA", str(kg_archive("umls").parent))
    namespace: dict = {"__name__": "__docs__"}
    for lang, start, text in blocks(page):
        if lang != "python":
            continue
        code = compile(text, f"{page.relative_to(REPO)}:{start}", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own examples
    assert os.getcwd() == str(scratch)
