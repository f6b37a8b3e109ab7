"""Planetoid citation graphs (Cora, CiteSeer, PubMed) through PyG, from local raw files.

Raw files (``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``) are looked up in
``ROOT/<Name>/raw`` for ROOT = the explicit ``root``, ``$DISENKG_DATA/planetoid``, then the
package's ``disenkg/data/planetoid`` (Cora is bundled). PyG processes them into a writable cache
copy (``$DISENKG_CACHE/planetoid``), so read-only data directories work. A dataset found
nowhere goes through PyG's own download into that cache (CiteSeer, PubMed by name).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from disenkg.datasets.sources import BUNDLED_DATA, cache_dir
from disenkg.datasets.triples import DatasetError

__all__ = ["RAW_SUFFIXES", "load_planetoid"]

logger = logging.getLogger(__name__)

RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _raw_files(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{s}" for s in RAW_SUFFIXES]


def _find_raw(name: str, root: str | os.PathLike | None) -> Path:
    roots = [Path(root)] if root is not None else []
    if os.environ.get("DISENKG_DATA"):
        roots.append(Path(os.environ["DISENKG_DATA"]) / "planetoid")
    roots.append(BUNDLED_DATA / "planetoid")
    for r in roots:
        for cand in (r / name / "raw", r / "raw", r):
            if all((cand / f).is_file() for f in _raw_files(name)):
                return cand
    searched = [str(r) for r in roots]
    raise DatasetError(f"Planetoid {name}: raw files {_raw_files(name)} not found under "
                       f"{searched} (expected ROOT/{name}/raw/)")


def load_planetoid(name: str = "Cora", root: str | os.PathLike | None = None, *,
                   normalize_features: bool = True):
    """The PyG ``Data`` object of a Planetoid graph with its public split masks.

    ``normalize_features`` row-normalises the bag-of-words features to sum to one, the
    preprocessing of the GAT and VGAE papers (and PyG's examples).
    """
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid

    work = cache_dir() / "planetoid"
    transform = T.NormalizeFeatures() if normalize_features else None
    try:
        raw = _find_raw(name, root)
    except DatasetError as missing:
        logger.info("%s; trying PyG's download into %s", missing, work)
        try:
            return Planetoid(str(work), name, transform=transform)[0]
        except Exception as err:  # re-raised with both causes, not swallowed
            raise DatasetError(f"{missing}; PyG's download into {work} failed too: "
                               f"{type(err).__name__}: {err}") from err
    dest = work / name / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    for f in _raw_files(name):
        if not (dest / f).exists() or (dest / f).stat().st_size != (raw / f).stat().st_size:
            shutil.copyfile(raw / f, dest / f)
    try:
        return Planetoid(str(work), name, transform=transform)[0]
    except Exception as err:  # re-raised with the file location, not swallowed
        raise DatasetError(f"Planetoid {name}: could not process raw files in {raw}: "
                           f"{err}") from err
