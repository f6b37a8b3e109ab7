r"""Lazily read (groups, samples, time, nodes, features) arrays for node-level prediction.

Features are a ``.npy`` of shape ``(G, S, T, N, F)`` opened with ``np.load(mmap_mode="r")``;
one item is the sample ``(g, s)`` as an ``(N, T*F)`` float32 tensor, read when a batch asks
for it with one ``pread`` at the offset the memory map gives. Reading through the mapping
itself would count every file page the kernel maps around a fault (readahead windows of
megabytes here) in the process RSS, which then grows with the file size; ``pread`` leaves
those pages in the page cache only, so peak RSS is bounded by the batch. Targets are ``(G, S, N)``
(per node) or ``(G, S)`` (per sample), float for regression, integer for classification.
The node graph is an edge list: ``.npy`` of shape ``(2, E)`` or ``(E, 2)``, or a CSV with
two integer columns (an optional header line).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from disenkg.datasets.triples import DatasetError

__all__ = ["ArrayDataset", "load_edges", "make_synthetic", "open_npy", "split_indices"]

TARGET_KINDS = ("regression", "classification")


def open_npy(path: str | os.PathLike, *, mmap: bool = True) -> np.ndarray:
    """Opens a ``.npy`` file without ever unpickling (``allow_pickle=False``).

    A file without the NumPy header, an object array or a truncated file raises
    :class:`DatasetError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"array file {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise DatasetError(f"{path}: not a .npy file (no NumPy header); save arrays with "
                           f"numpy.save")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        reason = ("holds Python objects, which are never loaded" if "pickle" in str(err)
                  else str(err).splitlines()[0])
        raise DatasetError(f"{path}: cannot read as a numeric .npy array: {reason}") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err}") from err


def load_edges(path: str | os.PathLike, num_nodes: int) -> Tensor:
    """``(2, E)`` long edge index from ``.npy`` or ``.csv``; ids must lie in ``[0, N)``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"edge file {path} does not exist")
    if path.suffix == ".npy":
        arr = np.asarray(open_npy(path, mmap=False))
        if arr.ndim != 2 or 2 not in arr.shape:
            raise DatasetError(f"{path}: edges must have shape (2, E) or (E, 2), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"{path}: edge ids must be integers, got dtype {arr.dtype}")
        if arr.shape == (2, 2):
            raise DatasetError(f"{path}: shape (2, 2) is ambiguous: two edges as (2, E) "
                               "columns or as (E, 2) rows; write the two edges to a .csv "
                               "file (src,dst per line) instead")
        ei = arr if arr.shape[0] == 2 else arr.T
    elif path.suffix == ".csv":
        rows = []
        with open(path, newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < 2:
                    raise DatasetError(f"{path} line {lineno}: expected 2 columns (src, dst), "
                                       f"got {len(row)}")
                try:
                    rows.append((int(row[0]), int(row[1])))
                except ValueError as err:
                    if lineno == 1 and not rows:
                        continue  # a header line
                    raise DatasetError(f"{path} line {lineno}: non-integer node id in "
                                       f"{row[:2]}") from err
        if not rows:
            raise DatasetError(f"{path}: no edges")
        ei = np.asarray(rows, dtype=np.int64).T
    else:
        raise DatasetError(f"{path}: edges must be a .npy or .csv file")
    ei = torch.as_tensor(np.ascontiguousarray(ei), dtype=torch.long)
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
        raise DatasetError(f"{path}: node ids must lie in [0, {num_nodes}) to match the "
                           f"features' node axis, got range [{int(ei.min())}, {int(ei.max())}]")
    return ei


class _RowReader:
    """Reads row ``i`` (over the first two axes) of a C-order ``.npy`` with ``pread``."""

    def __init__(self, path: str, arr: np.memmap) -> None:
        if not arr.flags.c_contiguous:
            raise DatasetError(f"{path}: arrays must be stored in C order")
        self.path, self.dtype = path, arr.dtype
        self.offset = int(arr.offset)
        self.row_bytes = int(np.prod(arr.shape[2:], dtype=np.int64)) * arr.dtype.itemsize
        self.row_shape = arr.shape[2:]
        self._fd: int | None = None
        self._pid = -1

    def __call__(self, i: int) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():  # (re)open in each worker process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        pos = self.offset + i * self.row_bytes
        buf = os.pread(self._fd, self.row_bytes, pos)
        if len(buf) != self.row_bytes:
            raise DatasetError(f"{self.path}: short read at byte {pos} (file truncated?)")
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.row_shape)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class ArrayDataset(Dataset):
    """Items ``(x (N, T*F) float32, y)`` for the samples ``index`` of a 5-D array.

    Args:
        features (str | Path): ``.npy`` of shape ``(G, S, T, N, F)``, floating point.
        targets (str | Path): ``.npy`` of shape ``(G, S, N)`` or ``(G, S)``.
        target_kind (str): ``regression`` or ``classification``.
    """

    def __init__(self, *, features: str | os.PathLike, targets: str | os.PathLike,
                 target_kind: str) -> None:
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {target_kind!r}; choose one of "
                             f"{list(TARGET_KINDS)}")
        self.x = open_npy(features)
        self.y = open_npy(targets)
        if self.x.ndim != 5:
            raise DatasetError(f"{features}: features must have shape (G, S, T, N, F), got "
                               f"{self.x.shape}")
        if not np.issubdtype(self.x.dtype, np.floating):
            raise DatasetError(f"{features}: features must be floating point, got "
                               f"{self.x.dtype}")
        G, S, T, N, F = self.x.shape
        if self.y.shape not in ((G, S, N), (G, S)):
            raise DatasetError(f"{targets}: targets must have shape (G, S, N) = {(G, S, N)} "
                               f"or (G, S) = {(G, S)}, got {self.y.shape}")
        if target_kind == "classification" and not np.issubdtype(self.y.dtype, np.integer):
            raise DatasetError(f"{targets}: classification targets must be integers, got "
                               f"{self.y.dtype}")
        if target_kind == "regression" and not np.issubdtype(self.y.dtype, np.number):
            raise DatasetError(f"{targets}: regression targets must be numeric, got "
                               f"{self.y.dtype}")
        #: classes of classification targets over the whole file (largest label + 1), so a
        #: class seen only in validation or test still has an output
        self.num_classes = _check_targets(Path(targets), self.y, target_kind)
        self.target_kind = target_kind
        self.per_node = self.y.ndim == 3
        self.shape = (G, S, T, N, F)
        self._read_x = _RowReader(str(features), self.x)
        self._read_y = _RowReader(str(targets), self.y)

    @property
    def num_nodes(self) -> int:
        return self.shape[3]

    @property
    def in_channels(self) -> int:
        return self.shape[2] * self.shape[4]

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        G, S, T, N, F = self.shape
        if not 0 <= int(i) < G * S:
            raise IndexError(f"sample {i} out of range for {G} x {S} samples")
        g, s = divmod(int(i), S)
        x = self._read_x(int(i)).astype(np.float32)  # (T, N, F), a private copy
        if not np.isfinite(x).all():
            raise DatasetError(f"features contain non-finite values at group {g}, sample {s}")
        x = torch.from_numpy(x).permute(1, 0, 2).reshape(N, T * F)
        y = np.array(self._read_y(int(i)))
        yt = torch.as_tensor(y, dtype=torch.long if self.target_kind == "classification"
                             else torch.float32)
        return x, yt


def _scan(path: Path, arr: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first element, elements)`` of a C-order ``.npy`` in chunks of ``chunk`` elements,
    read with plain ``read`` calls into one reused buffer (never through a memory map): a
    whole-file pass keeps one chunk resident, not every page it has touched."""
    if not arr.flags.c_contiguous:
        raise DatasetError(f"{path}: arrays must be stored in C order")
    size = arr.dtype.itemsize
    buf = bytearray(min(chunk, max(arr.size, 1)) * size)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(int(arr.offset))
        for start in range(0, arr.size, chunk):
            n = min(chunk, arr.size - start)
            view = memoryview(buf)[:n * size]
            got = 0
            while got < n * size:
                k = fh.readinto(view[got:])
                if not k:
                    raise DatasetError(f"{path}: short read at byte "
                                       f"{int(arr.offset) + start * size + got} (file "
                                       f"truncated?)")
                got += k
            yield start, np.frombuffer(view, dtype=arr.dtype, count=n)


def _check_targets(path: Path, y: np.ndarray, kind: str, chunk: int = 1 << 22) -> int | None:
    """Names NaN / infinite regression targets and negative class labels (the whole file,
    in chunks read by :func:`_scan`: memory stays at one chunk whatever the file's size);
    returns the number of classes (largest label + 1) of classification targets."""
    top = -1
    for start, part in _scan(path, y, chunk):
        bad = (~np.isfinite(part)) if kind == "regression" else (part < 0)
        if bad.any():
            first = start + int(np.argmax(bad))
            index = tuple(int(i) for i in np.unravel_index(first, y.shape))
            what = "non-finite values (NaN or inf)" if kind == "regression" else \
                "negative class labels"
            raise DatasetError(f"{path}: targets hold {what}: {int(bad.sum())} in the first "
                               f"chunk with one, first at index {index} = {part[first - start]}")
        if kind == "classification" and part.size:
            top = max(top, int(part.max()))
    return top + 1 if kind == "classification" else None


def split_indices(n: int, *, max_samples: int | None, seed: int,
                  fractions: tuple[float, float] = (0.7, 0.15)) -> dict[str, Tensor]:
    """Random train / valid / test split of (at most ``max_samples`` of) ``n`` sample ids."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if max_samples is not None:
        if max_samples < 3:
            raise ValueError(f"max_samples must be >= 3, got {max_samples}")
        perm = perm[:max_samples]
    m = len(perm)
    if m < 3:
        raise ValueError(f"need at least 3 samples for train / valid / test, got {m}")
    a = min(m - 2, max(1, int(round(fractions[0] * m))))
    b = a + min(m - a - 1, max(1, int(round(fractions[1] * m))))
    return {"train": perm[:a], "valid": perm[a:b], "test": perm[b:]}


def make_synthetic(directory: str | os.PathLike, *, shape=(7, 1358, 12, 307, 2),
                   extra_edges: int = 300, noise: float = 0.1, seed: int = 0,
                   chunk: int = 256) -> dict[str, Path]:
    """Writes ``features.npy``, ``edges.npy``, ``targets.npy`` with a planted graph signal.

    The target of node ``n`` is the mean over its neighbours ``j`` of
    ``tanh(mean_t x[t, j, 0]) * 2 + x[T-1, j, 1]``, plus noise: a node's own history
    carries no information about it, so a no-graph baseline cannot predict it and a graph
    model can. Written chunk by chunk through ``open_memmap`` (memory stays small).
    """
    G, S, T, N, F = shape
    if F < 2:
        raise ValueError(f"the synthetic signal needs F >= 2 features, got {F}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ring = np.stack([np.arange(N), (np.arange(N) + 1) % N])
    extra = rng.integers(0, N, size=(2, extra_edges))
    extra = extra[:, extra[0] != extra[1]]
    und = np.concatenate([ring, extra], axis=1)
    edges = np.unique(np.concatenate([und, und[::-1]], axis=1), axis=1)
    np.save(out / "edges.npy", edges.astype(np.int64))
    deg = np.bincount(edges[1], minlength=N).astype(np.float32)
    feats = np.lib.format.open_memmap(out / "features.npy", mode="w+", dtype=np.float32,
                                      shape=shape)
    targets = np.lib.format.open_memmap(out / "targets.npy", mode="w+", dtype=np.float32,
                                        shape=(G, S, N))
    for g in range(G):
        for s0 in range(0, S, chunk):
            s1 = min(S, s0 + chunk)
            x = rng.standard_normal((s1 - s0, T, N, F), dtype=np.float32)
            feats[g, s0:s1] = x
            signal = np.tanh(x[:, :, :, 0].mean(1) * 2) * 2 + x[:, T - 1, :, 1]  # (s, N)
            agg = np.zeros_like(signal)
            np.add.at(agg.T, edges[1], signal.T[edges[0]])
            y = agg / deg + noise * rng.standard_normal(agg.shape, dtype=np.float32)
            targets[g, s0:s1] = y
    feats.flush()
    targets.flush()
    del feats, targets
    return {"features": out / "features.npy", "edges": out / "edges.npy",
            "targets": out / "targets.npy"}
