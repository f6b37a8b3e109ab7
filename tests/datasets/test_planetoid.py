"""Planetoid raw files are read by a restricted unpickler, checked for consistency, never
cached under a name another root could reuse (issue 31)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import disenkg.datasets.planetoid as pl
from disenkg.datasets import DatasetError
from disenkg.datasets.planetoid import RAW_SUFFIXES, load_planetoid, read_raw
from disenkg.datasets.sources import BUNDLED_DATA

BUNDLED = BUNDLED_DATA / "planetoid" / "Cora" / "raw"


@pytest.fixture
def cora_copy(tmp_path):
    d = tmp_path / "root" / "Cora" / "raw"
    shutil.copytree(BUNDLED, d)
    return d


def test_the_safe_reader_equals_pygs_planetoid(tmp_path):
    """The graph, features, labels and masks equal PyG's ``Planetoid`` processing of the
    same (bundled, trusted) files."""
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid

    shutil.copytree(BUNDLED.parent, tmp_path / "Cora")
    ref = Planetoid(str(tmp_path), "Cora", transform=T.NormalizeFeatures())[0]
    data = load_planetoid("Cora")
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(data, key), getattr(ref, key)), key


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file if run


def test_a_raw_file_carrying_code_is_refused_and_not_run(cora_copy, tmp_path):
    marker = tmp_path / "pwned"
    (cora_copy / "ind.cora.x").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    before = {f.name: f.read_bytes() for f in cora_copy.iterdir()}
    with pytest.raises(DatasetError, match=r"ind.cora.x: refused to load (builtins|io)\.open"):
        load_planetoid("Cora", cora_copy.parent.parent)
    assert not marker.exists()
    assert before == {f.name: f.read_bytes() for f in cora_copy.iterdir()}  # nothing lost
    import os

    class Sys:
        def __reduce__(self):
            return (os.system, ("echo hi",))

    (cora_copy / "ind.cora.y").write_bytes(pickle.dumps(Sys(), protocol=2))
    with pytest.raises(DatasetError, match="refused to load"):
        read_raw(cora_copy, "Cora")


def test_an_explicit_root_is_the_only_place_looked_at(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"Planetoid Cora: raw files .* not found under "
                                           r"\['.*empty'\]"):
        load_planetoid("Cora", tmp_path / "empty")  # never the bundled Cora


def test_two_roots_never_share_a_cache(cora_copy, tmp_path):
    """A second root with other labels gives its own graph (a name-keyed cache reused
    the first root's tensors)."""
    first = load_planetoid("Cora", cora_copy.parent.parent)
    other = tmp_path / "other" / "Cora" / "raw"
    shutil.copytree(BUNDLED, other)
    ally = pickle.loads((other / "ind.cora.ally").read_bytes(), encoding="latin1")
    (other / "ind.cora.ally").write_bytes(pickle.dumps(np.roll(ally, 1, axis=1), protocol=2))
    second = load_planetoid("Cora", other.parent.parent)
    assert not torch.equal(first.y[first.train_mask], second.y[second.train_mask])


@pytest.mark.parametrize("suffix,obj,message", [
    ("y", np.zeros((5, 7)), "ind.cora.x has 140 rows but ind.cora.y has 5"),
    ("tx", sp.csr_matrix(np.zeros((1000, 3))), "column counts differ"),
    ("graph", [1, 2], "expected a dict of adjacency lists"),
    ("allx", "text", "expected a 2-D numeric matrix"),
])
def test_inconsistent_raw_files_are_refused(cora_copy, suffix, obj, message):
    (cora_copy / f"ind.cora.{suffix}").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DatasetError, match=message):
        read_raw(cora_copy, "Cora")


def test_test_ids_overlapping_training_are_refused(cora_copy):
    ids = (cora_copy / "ind.cora.test.index").read_text().split()
    ids[0] = "3"  # a training node
    (cora_copy / "ind.cora.test.index").write_text("\n".join(ids) + "\n")
    with pytest.raises(DatasetError, match="test ids must be distinct and >= 1708"):
        read_raw(cora_copy, "Cora")


def test_missing_everywhere_downloads_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def download(name, dest):
        calls.append(dest)
        shutil.copytree(BUNDLED, dest, dirs_exist_ok=True)

    monkeypatch.setattr(pl, "BUNDLED_DATA", tmp_path / "empty")
    monkeypatch.delenv("DISENKG_DATA", raising=False)
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pl, "_download", download)
    data = load_planetoid("Cora")
    assert len(calls) == 1 and str(calls[0]).startswith(str(tmp_path / "cache"))
    assert (data.num_nodes, data.num_features) == (2708, 1433)

    def offline(name, dest):
        raise OSError("no network")

    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(pl, "_download", offline)
    with pytest.raises(DatasetError, match=r"Planetoid Cora: raw files .* not found .*; the "
                                           r"download into .* failed too: OSError: no network"):
        load_planetoid("Cora")


def test_every_raw_suffix_is_read():
    assert len(RAW_SUFFIXES) == 8
