"""Planetoid citation graphs (Cora, CiteSeer, PubMed), read from their raw files safely.

Raw files (``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``) are looked up in
``ROOT/<Name>/raw`` (or ``ROOT/raw``, ``ROOT``) for ROOT = the explicit ``root`` alone when
one is given, else ``$DISENKG_DATA/planetoid`` and then the package's
``disenkg/data/planetoid`` (Cora is bundled); a graph found nowhere (without ``root``) is
downloaded into ``$DISENKG_CACHE/planetoid/<Name>/raw``.

The raw files are Python pickles. They are read with a **restricted unpickler** that admits
only the classes these files hold (NumPy arrays and dtypes, SciPy CSR matrices, lists, and
the ``defaultdict(list)`` of the graph) and refuses any other global, so a file carrying
code is an error naming it, never executed. The graph is built from the raw files on every
load (a second or so for Cora) and no processed cache is read, so there is no cached file
to tamper with and no cache that another ``root`` could reuse. The split follows the
Planetoid convention (PyG's and Kipf's): training nodes ``0..len(y)-1``, the next 500 for
validation, ``test.index`` for test; inconsistent files (row counts, feature widths, test
indices that overlap training or validation or leave the graph) are refused.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disenkg.datasets.sources import BUNDLED_DATA, cache_dir
from disenkg.datasets.triples import DatasetError

__all__ = ["PLANETOID_URL", "RAW_SUFFIXES", "load_planetoid", "read_raw"]

logger = logging.getLogger(__name__)

RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
#: where a graph found nowhere locally is downloaded from (the Planetoid authors' files)
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
#: validation nodes after the training nodes (the Planetoid split)
NUM_VAL = 500

#: the globals a Planetoid raw file may name; anything else is refused
ALLOWED_GLOBALS = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("__builtin__", "list"), ("builtins", "list"),
    ("collections", "defaultdict"),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),  # Python 3's
    # way of writing bytes at protocol 2 (a file re-saved by Python 3)
}


class _RawUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, fh: Any, path: Path) -> None:
        super().__init__(fh, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DatasetError(f"{self.path}: refused to load {module}.{name}: a Planetoid "
                               "raw file holds only arrays, sparse matrices and lists "
                               "(the file may carry code; it was not run)")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        if module in ("scipy.sparse.csr", "scipy.sparse._csr"):
            try:
                import scipy.sparse
            except ImportError:
                raise DatasetError(f"{self.path} holds a SciPy sparse matrix; reading it "
                                   "needs scipy (pip install scipy)") from None
            return scipy.sparse.csr_matrix
        if module == "__builtin__":
            module = "builtins"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        return _RawUnpickler(io.BytesIO(data), path).load()
    except DatasetError:
        raise
    except Exception as err:  # a damaged file: re-raised naming it, not swallowed
        raise DatasetError(f"{path}: not a readable Planetoid raw file: "
                           f"{type(err).__name__}: {err}") from err


def _matrix(path: Path, obj: Any) -> torch.Tensor:
    if hasattr(obj, "toarray") and hasattr(obj, "shape"):
        obj = obj.toarray()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or obj.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected a 2-D numeric matrix, got "
                           f"{type(obj).__name__} {getattr(obj, 'shape', '')}")
    return torch.from_numpy(np.asarray(obj, dtype=np.float32))


def _graph(path: Path, obj: Any, n: int) -> torch.Tensor:
    from torch_geometric.utils import coalesce, remove_self_loops

    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict of adjacency lists, got "
                           f"{type(obj).__name__}")
    rows: list[int] = []
    cols: list[int] = []
    for key, value in obj.items():
        if not isinstance(key, (int, np.integer)) or not isinstance(value, list) or \
                not all(isinstance(v, (int, np.integer)) for v in value):
            raise DatasetError(f"{path}: adjacency entry {key!r} is not node -> list of nodes")
        rows += [int(key)] * len(value)
        cols += [int(v) for v in value]
    ei = torch.tensor([rows, cols], dtype=torch.long).view(2, -1)
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DatasetError(f"{path}: node ids must lie in [0, {n}), got [{int(ei.min())}, "
                           f"{int(ei.max())}]")
    ei, _ = remove_self_loops(ei)
    return coalesce(ei, num_nodes=n, sort_by_row=False)


def read_raw(raw: Path, name: str):
    """The PyG ``Data`` (``x``, ``edge_index``, ``y``, ``train/val/test_mask``) of the
    Planetoid raw files of ``name`` in ``raw``."""
    from torch_geometric.data import Data

    stem = name.lower()
    path = {s: raw / f"ind.{stem}.{s}" for s in RAW_SUFFIXES}
    m = {s: _matrix(path[s], _unpickle(path[s])) for s in ("x", "tx", "allx", "y", "ty",
                                                            "ally")}
    try:
        text = path["test.index"].read_text(encoding="utf-8").split()
        test_index = torch.tensor([int(t) for t in text], dtype=torch.long)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatasetError(f"{path['test.index']}: expected one node id per line: "
                           f"{err}") from err
    checks = [("x", "y", 0), ("allx", "ally", 0), ("tx", "ty", 0)]
    for a, b, dim in checks:
        if m[a].shape[dim] != m[b].shape[dim]:
            raise DatasetError(f"{raw}: ind.{stem}.{a} has {m[a].shape[0]} rows but "
                               f"ind.{stem}.{b} has {m[b].shape[0]}")
    for group in (("x", "tx", "allx"), ("y", "ty", "ally")):
        widths = {s: m[s].shape[1] for s in group}
        if len(set(widths.values())) > 1:
            raise DatasetError(f"{raw}: column counts differ across {widths}")
    if len(test_index) != m["tx"].shape[0]:
        raise DatasetError(f"{path['test.index']}: {len(test_index)} test ids for "
                           f"{m['tx'].shape[0]} rows of ind.{stem}.tx")
    n_train, n_all = m["y"].shape[0], m["allx"].shape[0]
    if n_train + NUM_VAL > n_all:
        raise DatasetError(f"{raw}: {n_train} training + {NUM_VAL} validation nodes exceed "
                           f"the {n_all} rows of ind.{stem}.allx")
    tx, ty = m["tx"], m["ty"]
    sorted_test = test_index.sort()[0]
    if len(test_index) and (int(sorted_test[0]) < n_all
                            or len(set(test_index.tolist())) != len(test_index)):
        raise DatasetError(f"{path['test.index']}: test ids must be distinct and >= "
                           f"{n_all} (after the training and validation rows), got "
                           f"min {int(sorted_test[0])}")
    if len(test_index) and int(sorted_test[-1]) - n_all + 1 != len(test_index):
        # CiteSeer: isolated test nodes without features; padded with zero rows
        span = int(sorted_test[-1]) - int(sorted_test[0]) + 1
        tx = torch.zeros(span, m["tx"].shape[1])
        tx[sorted_test - sorted_test[0]] = m["tx"]
        ty = torch.zeros(span, m["ty"].shape[1])
        ty[sorted_test - sorted_test[0]] = m["ty"]
    x = torch.cat([m["allx"], tx])
    y = torch.cat([m["ally"], ty]).argmax(1)
    n = x.shape[0]
    if len(test_index) and int(sorted_test[-1]) >= n:
        raise DatasetError(f"{path['test.index']}: test id {int(sorted_test[-1])} is beyond "
                           f"the {n} nodes")
    x[test_index] = x[sorted_test]
    y[test_index] = y[sorted_test]

    def mask(index: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n, dtype=torch.bool)
        out[index] = True
        return out

    data = Data(x=x, edge_index=_graph(path["graph"], _unpickle(path["graph"]), n), y=y)
    data.train_mask = mask(torch.arange(n_train))
    data.val_mask = mask(torch.arange(n_train, n_train + NUM_VAL))
    data.test_mask = mask(test_index)
    return data


def _raw_files(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{s}" for s in RAW_SUFFIXES]


def _find_raw(name: str, root: str | os.PathLike | None) -> Path:
    if root is not None:
        roots = [Path(root)]  # an explicit root is the only place looked at
    else:
        roots = []
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


def _download(name: str, dest: Path) -> None:
    """The raw files of ``name`` from :data:`PLANETOID_URL` into ``dest``."""
    from torch_geometric.data import download_url

    dest.mkdir(parents=True, exist_ok=True)
    for f in _raw_files(name):
        download_url(f"{PLANETOID_URL}/{f}", str(dest), log=False)


def load_planetoid(name: str = "Cora", root: str | os.PathLike | None = None, *,
                   normalize_features: bool = True):
    """The PyG ``Data`` object of a Planetoid graph with its public split masks.

    ``normalize_features`` row-normalises the bag-of-words features to sum to one, the
    preprocessing of the GAT and VGAE papers (and PyG's examples).
    """
    try:
        raw = _find_raw(name, root)
    except DatasetError as missing:
        if root is not None:
            raise
        dest = cache_dir() / "planetoid" / name / "raw"
        logger.info("%s; downloading into %s", missing, dest)
        try:
            _download(name, dest)
        except Exception as err:  # re-raised with both causes, not swallowed
            raise DatasetError(f"{missing}; the download into {dest} failed too: "
                               f"{type(err).__name__}: {err}") from err
        raw = dest
    data = read_raw(raw, name)
    if normalize_features:
        import torch_geometric.transforms as T

        data = T.NormalizeFeatures()(data)
    return data
