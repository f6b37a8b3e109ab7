"""Reading ``head<TAB>relation<TAB>tail`` split files from a directory or an archive.

Tolerated: CRLF line ends, trailing whitespace, blank lines, a UTF-8 BOM, and files that use
runs of spaces instead of tabs. Anything else malformed raises :class:`DatasetError` naming
the file and line.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from disenkg.errors import UserError

__all__ = ["SPLITS", "DatasetError", "parse_triples", "read_raw", "read_splits"]

SPLITS = ("train", "valid", "test")


class DatasetError(UserError, ValueError):
    """A dataset file is missing, unreadable or malformed."""


def parse_triples(text: bytes | str, source: str) -> list[tuple[str, str, str]]:
    """Parses one split file; ``source`` names it in error messages."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DatasetError(f"{source}: not valid UTF-8 ({err})") from err
    text = text.lstrip("\ufeff")
    triples: list[tuple[str, str, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 3 or not all(fields):
            raise DatasetError(
                f"{source} line {lineno}: expected 3 tab-separated fields "
                f"(head, relation, tail), got {len(fields)}: {line[:80]!r}"
            )
        triples.append((fields[0], fields[1], fields[2]))
    if not triples:
        raise DatasetError(f"{source}: the split file holds no triples")
    return triples


def _read_dir(path: Path) -> dict[str, tuple[bytes, str]]:
    out = {}
    for split in SPLITS:
        f = path / f"{split}.txt"
        if not f.is_file():
            present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
            raise DatasetError(f"missing split file {f} (directory holds {present})")
        out[split] = (f.read_bytes(), str(f))
    return out


def _pick(names: list[str], split: str, archive: Path) -> str:
    hits = [n for n in names if n.rsplit("/", 1)[-1] == f"{split}.txt"]
    if not hits:
        raise DatasetError(f"missing split file {split}.txt in archive {archive}")
    return min(hits, key=len)  # the shallowest one


def _read_tar(path: Path) -> dict[str, tuple[bytes, str]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            out = {}
            for split in SPLITS:
                name = _pick(list(members), split, path)
                fh = tar.extractfile(members[name])
                out[split] = (fh.read(), f"{path}:{name}")
            return out
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f"cannot read archive {path}: {err}") from err


def _read_zip(path: Path) -> dict[str, tuple[bytes, str]]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            return {
                s: (zf.read(n), f"{path}:{n}")
                for s in SPLITS
                for n in [_pick(names, s, path)]
            }
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"cannot read archive {path}: {err}") from err


def read_splits(path: str | Path) -> dict[str, list[tuple[str, str, str]]]:
    """Reads ``train``/``valid``/``test`` from a directory, ``.tar(.gz)`` or ``.zip``."""
    return {split: parse_triples(data, source) for split, (data, source) in read_raw(path).items()}


def read_raw(path: str | Path) -> dict[str, tuple[bytes, str]]:
    """The bytes of each split file and the name it is reported under, unparsed."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    if path.is_dir():
        raw = _read_dir(path)
    elif path.name.endswith(".zip"):
        raw = _read_zip(path)
    elif any(path.name.endswith(s) for s in (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        raw = _read_tar(path)
    else:
        raise DatasetError(
            f"{path}: not a directory, .tar(.gz/.bz2/.xz), .tgz or .zip archive"
        )
    return raw
