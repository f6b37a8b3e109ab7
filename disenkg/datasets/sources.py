"""Finding a dataset by name or path, and downloading public benchmarks with sha256 checks.

Lookup order for a name: an explicit path, ``$DISENKG_DATA``, the package's bundled
``disenkg/data/`` (UMLS and Kinship), then the cache (``$DISENKG_CACHE`` or
``~/.cache/disenkg``), downloading into it if needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from disenkg.datasets.triples import DatasetError
from disenkg.utils.cache import cache_dir

__all__ = ["KNOWN", "Source", "cache_dir", "download", "resolve", "sha256sum"]

logger = logging.getLogger(__name__)

#: datasets shipped inside the package (also in an installed wheel)
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class Source:
    """A public benchmark: archive file name, download URL and its sha256."""

    name: str
    filename: str
    url: str
    sha256: str


_CONVE = "https://github.com/TimDettmers/ConvE/raw/master"
KNOWN: dict[str, Source] = {
    s.name.lower(): s
    for s in (
        Source("FB15k-237", "FB15k-237.tar.gz", f"{_CONVE}/FB15k-237.tar.gz",
               "65951677d1e574d968f0c7eff944b165975a1bb764dec7f7375fbb8529c45e83"),
        Source("WN18RR", "WN18RR.tar.gz", f"{_CONVE}/WN18RR.tar.gz",
               "f4d995689a624269bed8a4e4e66cc027ec830b6366940303dc20f507735db9a8"),
        Source("kinship", "kinship.tar.gz", f"{_CONVE}/kinship.tar.gz",
               "f95986e950996f58a692e061dc0e303d6ec95b2eb9f6c99e3df03e000ecd7383"),
        Source("umls", "umls.tar.gz", f"{_CONVE}/umls.tar.gz",
               "9823e0e41634bd2dce7a743ea177fd027d5b856b368eefbe184c4357d7ea825a"),
    )
}


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _candidates(root: Path, src: Source) -> list[Path]:
    return [root / src.name, root / src.filename, root / src.name.lower(),
            root / src.filename.lower()]


def download(src: Source, dest_dir: Path) -> Path:
    """Downloads ``src`` into ``dest_dir`` and verifies its sha256.

    A file whose checksum does not match is deleted, never used.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.filename
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
    logger.info("downloading %s from %s", src.name, src.url)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(src.url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError) as err:
            raise DatasetError(
                f"could not download {src.name} from {src.url} ({err}); put {src.filename} "
                f"in --data-dir, $DISENKG_DATA or {dest_dir} instead"
            ) from err
        verify(Path(tmp), src.sha256, what=f"download of {src.name} from {src.url}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def verify(path: Path, expected: str, what: str) -> None:
    """Raises (and deletes ``path``) when its sha256 differs from ``expected``."""
    got = sha256sum(path)
    if got != expected:
        path.unlink(missing_ok=True)
        raise DatasetError(
            f"checksum mismatch for {what}: expected sha256 {expected}, got {got}; "
            f"the file was deleted"
        )


def resolve(dataset: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
            allow_download: bool = True) -> Path:
    """Returns a directory or archive holding the dataset's three split files.

    ``dataset`` is a path (directory or archive) or a known name (case-insensitive):
    ``FB15k-237``, ``WN18RR``, ``kinship``, ``umls``.
    """
    p = Path(dataset)
    if p.exists():
        return p
    src = KNOWN.get(str(dataset).lower())
    roots = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get("DISENKG_DATA"):
        roots.append(Path(os.environ["DISENKG_DATA"]))
    roots.append(BUNDLED_DATA)
    name = src.name if src else str(dataset)
    for root in roots:
        for cand in (_candidates(root, src) if src else [root / name]):
            if cand.exists():
                return cand
    if src is None:
        raise DatasetError(
            f"dataset {str(dataset)!r} is neither an existing path nor a known name "
            f"({sorted(s.name for s in KNOWN.values())}); searched {[str(r) for r in roots]}"
        )
    cached = cache_dir() / src.filename
    if cached.exists():
        verify(cached, src.sha256, what=str(cached))
        return cached
    if not allow_download:
        raise DatasetError(f"dataset {src.name} not found in {[str(r) for r in roots]}")
    return download(src, cache_dir())
