"""Reading ``head<TAB>relation<TAB>tail`` split files from a directory or an archive.

The convention: lines end at ``\n`` only (a ``\r`` before it is dropped), so Unicode line
or record separators (U+2028, ``\x1c`` ...) inside a name stay part of the name; fields are
separated by tabs, or, in a line without a tab, by runs of ASCII spaces; a line whose first
character (after blanks) is ``#`` is a comment; a first data line that reads like a header
(``head relation tail``, ``subject predicate object``, ``h r t``, ``source relation
target``, any case) is a header. Comments and a header are skipped with one WARNING per file
naming the count and the first line. Also tolerated: trailing blanks, blank lines, a UTF-8
BOM. Anything else malformed raises :class:`DatasetError` naming the file and line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import lzma
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from disenkg.errors import UserError

logger = logging.getLogger(__name__)

#: first lines read as a header (lower-cased fields)
HEADERS = frozenset({("head", "relation", "tail"), ("subject", "predicate", "object"),
                     ("h", "r", "t"), ("head", "rel", "tail"), ("source", "relation", "target"),
                     ("subject", "relation", "object")})
_BLANKS = re.compile(r"[ \t]+")
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
    comments: list[int] = []
    header = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip(" \t\r")
        if not line:
            continue
        if line.startswith("#"):
            comments.append(lineno)
            continue
        fields = line.split("\t") if "\t" in line else _BLANKS.split(line)
        fields = [f.strip(" ") for f in fields]
        if not triples and not header and tuple(f.lower() for f in fields) in HEADERS:
            header = lineno
            continue
        if len(fields) != 3 or not all(fields):
            raise DatasetError(
                f"{source} line {lineno}: expected 3 tab-separated fields "
                f"(head, relation, tail), got {len(fields)}: {line[:80]!r}"
            )
        triples.append((fields[0], fields[1], fields[2]))
    if comments or header:
        parts = ([f"{len(comments)} comment line(s) starting with '#' (first: line "
                  f"{comments[0]})"] if comments else []) + \
            ([f"a header at line {header}"] if header else [])
        logger.warning("%s: skipped %s", source, " and ".join(parts))
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
        try:
            out[split] = (f.read_bytes(), str(f))
        except OSError as err:
            raise DatasetError(f"cannot read {f}: {err.strerror or err}") from err
    return out


#: default ceiling on the decompressed size of an archive (``max_bytes`` raises it)
MAX_ARCHIVE_BYTES = 1 << 30
#: an archive inflating by more than this ratio (and past :data:`MIN_BOMB_BYTES`) is refused
MAX_RATIO = 500
MIN_BOMB_BYTES = 32 << 20


def archive_limit(path: Path, max_bytes: int | None) -> int:
    """Decompressed bytes allowed for ``path``: ``max_bytes`` if given, else 1 GiB or 500
    times the archive's size, whichever is smaller, but at least 32 MiB (text triples
    compress about 6:1; a far higher ratio is a decompression bomb)."""
    if max_bytes is not None:
        return max_bytes
    return max(MIN_BOMB_BYTES, min(MAX_ARCHIVE_BYTES, MAX_RATIO * path.stat().st_size))


def _too_big(path: Path, limit: int) -> DatasetError:
    return DatasetError(f"archive {path} inflates beyond {limit >> 20} MiB",
                        hint="if the archive is trusted, raise the limit with "
                             "--max-archive-mb")


def _split_dir(names: list[str], archive: Path) -> str:
    """The one directory of the archive that holds the split files (``""`` = the root)."""
    dirs: dict[str, set[str]] = {}
    for n in names:
        d, _, base = n.rpartition("/")
        if base in {f"{s}.txt" for s in SPLITS}:
            dirs.setdefault(d, set()).add(base[:-4])
    if not dirs:
        raise DatasetError(f"archive {archive} holds no train.txt / valid.txt / test.txt "
                           f"(members: {sorted(names)[:10]})")
    if len(dirs) > 1:
        listing = "; ".join(f"{d or '.'}/: {', '.join(sorted(v))}" for d, v in sorted(dirs.items()))
        raise DatasetError(f"archive {archive} holds split files in {len(dirs)} directories "
                           f"({listing}); the three splits must come from one directory",
                           hint="repack the archive with one train/valid/test directory")
    (d, present), = dirs.items()
    missing = [s for s in SPLITS if s not in present]
    if missing:
        raise DatasetError(f"missing split file(s) {', '.join(f'{m}.txt' for m in missing)} "
                           f"in archive {archive} (directory {d or '.'}/)")
    return d


def _inflate(path: Path, limit: int) -> bytes:
    """The tar stream of ``path`` decompressed whole, so the gzip / bzip2 / xz checksum at
    its end is verified; at most ``limit`` bytes."""
    import bz2
    import gzip

    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        opener = gzip.open
    elif magic[:3] == b"BZh":
        opener = bz2.open
    elif magic == b"\xfd7zXZ\x00":
        opener = lzma.open
    else:
        opener = open
    buf = bytearray()
    with opener(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            buf += block
            if len(buf) > limit:
                raise _too_big(path, limit)
    return bytes(buf)


_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
                   lzma.LZMAError, ValueError, KeyError, NotImplementedError, RuntimeError)


@contextlib.contextmanager
def _archive_errors(path: Path) -> Iterator[None]:
    """Any decompression / container error becomes one :class:`DatasetError` naming the
    archive (a :class:`DatasetError` raised inside passes unchanged)."""
    try:
        yield
    except DatasetError:
        raise
    except _ARCHIVE_ERRORS as err:
        raise DatasetError(f"cannot read archive {path}: it is corrupt or truncated "
                           f"({type(err).__name__}: {err})") from None


def _read_tar(path: Path, limit: int) -> dict[str, tuple[bytes, str]]:
    with _archive_errors(path):
        data = _inflate(path, limit)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            d = _split_dir(list(members), path)
            out = {}
            for split in SPLITS:
                name = f"{d}/{split}.txt" if d else f"{split}.txt"
                fh = tar.extractfile(members[name])
                out[split] = (fh.read(), f"{path}:{name}")
            return out


def _read_zip(path: Path, limit: int) -> dict[str, tuple[bytes, str]]:
    with _archive_errors(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            d = _split_dir(names, path)
            out, total = {}, 0
            for split in SPLITS:
                name = f"{d}/{split}.txt" if d else f"{split}.txt"
                buf = bytearray()
                with zf.open(name) as fh:  # checks the member's CRC at its end
                    while block := fh.read(1 << 20):
                        buf += block
                        total += len(block)
                        if total > limit:
                            raise _too_big(path, limit)
                out[split] = (bytes(buf), f"{path}:{name}")
            return out


def read_splits(path: str | Path, *, max_bytes: int | None = None
                ) -> dict[str, list[tuple[str, str, str]]]:
    """Reads ``train``/``valid``/``test`` from a directory, ``.tar(.gz)`` or ``.zip``."""
    return {split: parse_triples(data, source)
            for split, (data, source) in read_raw(path, max_bytes=max_bytes).items()}


def read_raw(path: str | Path, *, max_bytes: int | None = None
             ) -> dict[str, tuple[bytes, str]]:
    """The bytes of each split file and the name it is reported under, unparsed.

    Archives are read whole so their checksums are verified; any decompression error
    becomes one :class:`DatasetError` naming the archive. The three splits must lie in one
    directory of the archive, and the decompressed size is capped
    (:func:`archive_limit`; ``max_bytes`` sets the cap).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    if path.is_dir():
        raw = _read_dir(path)
    elif path.name.endswith(".zip"):
        raw = _read_zip(path, archive_limit(path, max_bytes))
    elif any(path.name.endswith(s) for s in (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        raw = _read_tar(path, archive_limit(path, max_bytes))
    else:
        raise DatasetError(
            f"{path}: not a directory, .tar(.gz/.bz2/.xz), .tgz or .zip archive"
        )
    return raw
