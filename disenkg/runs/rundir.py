"""A run directory: everything needed to use a trained model without the original command.

Files (each written atomically; every ``.pt`` loads with ``weights_only=True``):

=================  ==========================================================================
``config.json``    task, model, resolved flags, package version, dataset name and fingerprint
``entities.tsv``   ``id<TAB>name`` in id order
``relations.tsv``  ``id<TAB>name`` in id order (base relations; ``r + R`` is the inverse)
``triples.pt``     the train / valid / test id triples, ``(n, 3)`` int64 each
``history.csv``    one row per epoch (see :data:`HISTORY_COLUMNS`)
``last.pt``        model, optimiser(s), RNG states, epoch, early-stopping state
``best.pt``        the model with the best validation MRR
``metrics.json``   final validation and test metrics
=================  ==========================================================================
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

import disenkg
from disenkg.datasets.kg import KGDataset
from disenkg.errors import RunDirError
from disenkg.runs.checkpoint import load_checkpoint, save_checkpoint
from disenkg.utils.io import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "LOCK_FILE", "RUN_EXTRAS", "RUN_FILES", "RunDir", "check_writable",
           "upgrade_args"]

#: files a run may leave in its directory (``--overwrite`` removes exactly these)
RUN_FILES = ("config.json", "entities.tsv", "relations.tsv", "triples.pt", "history.csv",
             "last.pt", "best.pt", "metrics.json", "manifest.json")
#: the files a manifest binds (``config.json`` by its identity: the settings that define the
#: model, not those a resume may change)
BOUND_FILES = ("entities.tsv", "relations.tsv", "triples.pt")
#: what a run leaves beside its files (plots, tracker logs): removed with the run's files
#: when ``--overwrite`` replaces it, so nothing of the old run stays beside the new one
RUN_EXTRAS = ("curves.png", "component_attention.png", "tensorboard", "search", "search.tsv")
#: the lock file of the process writing the directory (``fcntl.flock``, released by the
#: kernel when that process ends, so a crashed run leaves no stale lock)
LOCK_FILE = ".lock"
_HELD: dict[str, int] = {}  # run directories this process has locked -> lock fd

#: columns of ``history.csv``; validation columns are empty in epochs without validation
HISTORY_COLUMNS = ("epoch", "loss", "mi_loss", "valid_mrr", "valid_hits@1", "valid_hits@3",
                   "valid_hits@10", "seconds")


def check_writable(path: Path) -> None:
    """Creates ``path`` if needed and proves a file can be written in it."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise RunDirError(f"output directory {path} is not writable: {err.strerror or err}"
                          ) from err


#: implementation flags renamed to the one vocabulary (disenkg.ops.impls):
#: old key -> (new key, old value -> new value)
_RENAMED_IMPLS = {"impl": ("loss_impl", {"torch": "eager"}),
                  "conv_impl": ("encoder_impl", {"fused": "native", "naive": "eager"})}


def upgrade_args(args: dict[str, Any]) -> dict[str, Any]:
    """A saved run's flags under today's names: ``impl`` -> ``loss_impl``, ``conv_impl`` ->
    ``encoder_impl`` (values mapped to :mod:`disenkg.ops.impls`), ``image_chunk = 0`` ->
    ``head_impl = "eager"``. Flags already under today's names are kept as they are."""
    out = dict(args)
    for old, (new, values) in _RENAMED_IMPLS.items():
        if old in out and new not in out:
            value = out.pop(old)
            out[new] = values.get(value, value)
    if "image_chunk" in out and "head_impl" not in out:
        out["head_impl"] = "eager" if not out["image_chunk"] else "auto"
        out["image_chunk"] = out["image_chunk"] or 256
    return out


class RunDir:
    """Reads and writes the files of one run directory.

    Args:
        path (str | Path): the directory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ guarding
    def holds_run(self) -> list[str]:
        """The run files present (empty: the directory holds no run)."""
        found = [n for n in RUN_FILES if (self.path / n).exists()]
        return found + sorted(p.name for p in self.path.glob("best-seed*.pt"))

    def prepare(self, *, resume: bool = False, overwrite: bool = False) -> None:
        """Checks, before any training, that a run may write here, and locks the directory
        for this process.

        A directory that already holds a run is refused unless ``resume`` (continue it) or
        ``overwrite`` (replace it: its files are deleted by :meth:`replace_previous` once the
        new run has read its data, not here) is set. ``resume`` on a directory whose run has
        no ``last.pt`` is refused (it would start over the old files). A directory another
        live process is writing is refused.
        """
        check_writable(self.path)
        self.lock()
        present = self.holds_run()
        if present and resume and not (self.path / "last.pt").exists():
            raise RunDirError(
                f"cannot resume {self.path}: it holds {', '.join(present)} but no last.pt; "
                "a resumed run would start afresh over them",
                hint="pass --overwrite to replace the run, or --output-dir for a new one")
        if present and not resume and not overwrite:
            raise RunDirError(
                f"output directory {self.path} already holds a run ({', '.join(present)})",
                hint="pass --resume to continue it, --overwrite to replace it, or "
                     "--output-dir for a new directory")

    def replace_previous(self, *, keep: tuple[str, ...] = ()) -> None:
        """Deletes the files of the run this directory held (``--overwrite``): its run
        files, the node runs' checkpoints, plots, tracker logs and search, but the extras
        named in ``keep`` (a search made for the new run)."""
        for name in self.holds_run():
            (self.path / name).unlink()
        for extra in RUN_EXTRAS:
            if extra in keep:
                continue
            p = self.path / extra
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def lock(self) -> None:
        """Takes the directory's lock for this process (re-entrant); :class:`RunDirError`
        naming the process that holds it."""
        key = str(self.path.resolve())
        if key in _HELD:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"output directory {self.path} is in use by {holder}",
                              hint="wait for that run to end, or use another --output-dir"
                              ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        _HELD[key] = fd

    def unlock(self) -> None:
        """Releases the lock taken by :meth:`lock` (also released when the process ends)."""
        fd = _HELD.pop(str(self.path.resolve()), None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------------ config
    def write_config(self, config: dict[str, Any]) -> None:
        body = {"package_version": disenkg.__version__, **config}
        atomic_write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n",
                          self.path / "config.json")

    def read_config(self) -> dict[str, Any]:
        """``config.json``, with the flags of earlier versions under today's names."""
        config = self._read_json("config.json")
        if isinstance(config.get("args"), dict):
            config["args"] = upgrade_args(config["args"])
        return config

    def read_metrics(self) -> dict[str, Any]:
        return self._read_json("metrics.json")

    def _read_json(self, name: str) -> dict[str, Any]:
        p = self.path / name
        if not p.is_file():
            hint = None if self.path.is_dir() else "is --run-dir the run's output directory?"
            raise RunDirError(f"{p} does not exist: {self.path} is not a complete run "
                              f"directory", hint=hint)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunDirError(f"{p} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise RunDirError(f"{p} must hold a JSON object, got {type(data).__name__}")
        return data

    # ------------------------------------------------------------------ dataset
    def write_dataset(self, ds: KGDataset) -> None:
        """Names in id order and the id triples, so the run needs no dataset files later."""
        for fname, names in (("entities.tsv", ds.entities), ("relations.tsv", ds.relations)):
            atomic_write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)),
                              self.path / fname)
        save_checkpoint({"train": ds.train, "valid": ds.valid, "test": ds.test,
                         "name": ds.name, "fingerprint": dict(ds.fingerprint)},
                        self.path / "triples.pt")

    # ------------------------------------------------------------------ manifest
    def _identity(self) -> str:
        """sha256 of what in ``config.json`` defines the model (task, model, the settings a
        resume may not change, the dataset's fingerprint)."""
        from disenkg.runs.resume import SAFE_TO_CHANGE

        cfg = self.read_config()  # under today's names
        args = {k: v for k, v in (cfg.get("args") or {}).items()
                if k not in SAFE_TO_CHANGE and k not in ("world_size", "per_rank_batch")}
        body = {"task": cfg.get("task"), "model": cfg.get("model"), "args": args,
                "fingerprint": (cfg.get("dataset") or {}).get("fingerprint")}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()
                              ).hexdigest()

    def _current(self) -> dict[str, str]:
        out = {"config.json (identity)": self._identity()}
        for name in BOUND_FILES:
            out[name] = hashlib.sha256((self.path / name).read_bytes()).hexdigest()
        return out

    def write_manifest(self) -> str:
        """Binds the run's files together: ``manifest.json`` with their sha256; returns its
        digest, which every checkpoint of the run records."""
        body = json.dumps(self._current(), indent=1, sort_keys=True) + "\n"
        atomic_write_text(body, self.path / "manifest.json")
        return hashlib.sha256(body.encode()).hexdigest()

    def manifest_digest(self) -> str | None:
        """The digest of ``manifest.json`` (``None`` for a run written without one)."""
        p = self.path / "manifest.json"
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    def verify(self) -> None:
        """Refuses a run whose files no longer match its manifest, naming the file (runs
        written before manifests pass)."""
        if not (self.path / "config.json").is_file():
            raise RunDirError(f"{self.path} has no config.json: the run's settings are "
                              "unknown, so it cannot be resumed or used")
        digest = self.manifest_digest()
        if digest is None:
            return
        saved = self._read_json("manifest.json")
        try:
            now = self._current()
        except OSError as err:
            raise RunDirError(f"{self.path}: a run file is unreadable: {err}") from err
        changed = [k for k in now if saved.get(k) != now[k]]
        if changed:
            raise RunDirError(f"{self.path}: {', '.join(changed)} changed since the run was "
                              "written (manifest.json); its predictions would not be the "
                              "trained model's",
                              hint="restore the run's own files, or train a new run")

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Refuses a checkpoint written with other run files than this directory's."""
        got, digest = state.get("manifest"), self.manifest_digest()
        if got is not None and digest is not None and got != digest:
            raise RunDirError(f"{path} was written by another run than the files of "
                              f"{self.path} (their manifest digests differ)")

    def load_dataset(self) -> KGDataset:
        """The dataset exactly as the run saw it (names, ids and splits)."""
        names = {f: self._read_names(f) for f in ("entities.tsv", "relations.tsv")}
        t = load_checkpoint(self.path / "triples.pt",
                            required=("train", "valid", "test", "name", "fingerprint"))
        ents, rels = names["entities.tsv"], names["relations.tsv"]
        for split in ("train", "valid", "test"):
            x = t[split]
            if x.dtype != torch.int64 or x.dim() != 2 or x.shape[1] != 3:
                raise RunDirError(f"{self.path / 'triples.pt'}: {split} must be (n, 3) int64, "
                                  f"got {tuple(x.shape)} {x.dtype}")
            if len(x) and (int(x[:, [0, 2]].max()) >= len(ents) or int(x[:, 1].max())
                           >= len(rels) or int(x.min()) < 0):
                raise RunDirError(f"{self.path / 'triples.pt'}: {split} ids exceed the "
                                  f"{len(ents)} entities / {len(rels)} relations of the run")
        return KGDataset(t["name"], ents, rels, t["train"], t["valid"], t["test"],
                         fingerprint=dict(t["fingerprint"]))

    def _read_names(self, fname: str) -> list[str]:
        p = self.path / fname
        if not p.is_file():
            raise RunDirError(f"{p} does not exist: {self.path} is not a complete run directory")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise RunDirError(f"{p}: cannot read the names: {err}") from err
        names = []
        lines = text.split("\n")  # only \n ends a line: a name may hold U+2028 etc.
        if lines and lines[-1] == "":
            lines.pop()
        for lineno, line in enumerate(lines, 1):
            idx, sep, name = line.partition("\t")
            if not sep or idx != str(lineno - 1):
                raise RunDirError(f"{p} line {lineno}: expected '{lineno - 1}<TAB>name', "
                                  f"got {line[:80]!r}")
            names.append(name)
        return names

    # ------------------------------------------------------------------ history
    def write_history(self, rows: list[dict[str, Any]],
                      columns: tuple[str, ...] = HISTORY_COLUMNS) -> None:
        """Writes ``history.csv`` (link runs: :data:`HISTORY_COLUMNS`)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in columns})
        atomic_write_text(buf.getvalue(), self.path / "history.csv")

    def read_history(self) -> list[dict[str, float | None]]:
        p = self.path / "history.csv"
        if not p.is_file():
            raise RunDirError(f"{p} does not exist")
        rows = []
        with open(p, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.DictReader(fh), 2):
                try:
                    rows.append({k: (float(v) if v not in ("", None) else None)
                                 for k, v in row.items()})
                except ValueError as err:
                    raise RunDirError(f"{p} line {lineno}: {err}") from err
        return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
