"""Whole-file checks of array tasks keep memory bounded (issue 38): validating a targets
file leaves at most one chunk resident, whatever the file's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from disenkg.datasets import DatasetError
from disenkg.datasets.arrays import _check_targets, open_npy
from tests.conftest import REPO

CHILD = """
import json, sys
from disenkg.datasets.arrays import ArrayDataset

def rss():
    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])

before = rss()
ds = ArrayDataset(features=sys.argv[1], targets=sys.argv[2], target_kind="regression")
print(json.dumps({"grew_mb": (rss() - before) / 1024}))
"""


def _write(path, shape, value=1.0):
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for g in range(shape[0]):
        arr[g] = value  # real pages, not a sparse file
    arr.flush()
    del arr


def test_validating_targets_does_not_keep_the_file_resident(tmp_path):
    """A 128 MB targets file: constructing the dataset (which scans every target) grows the
    resident set by far less than the file (it grew by the whole file through the map)."""
    G, S, N = 8, 4096, 1024  # 128 MiB of float32 targets
    _write(tmp_path / "y.npy", (G, S, N))
    _write(tmp_path / "x.npy", (G, S, 1, N, 1))  # features: mapped, never read here
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    grew = json.loads(out.stdout.strip().splitlines()[-1])["grew_mb"]
    assert grew < 40, f"validation kept {grew:.0f} MB resident for a 128 MB file"


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_the_chunked_scan_finds_the_first_bad_value_at_any_chunk_size(tmp_path, chunk):
    y = np.zeros((3, 5, 7), dtype=np.float32)
    y[2, 1, 3] = np.nan
    y[2, 4, 0] = np.inf
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(DatasetError, match=r"first at index \(2, 1, 3\) = nan"):
        _check_targets(tmp_path / "y.npy", open_npy(tmp_path / "y.npy"), "regression",
                       chunk=chunk)
    labels = np.arange(3 * 5, dtype=np.int64).reshape(3, 5)
    labels[1, 2] = -1
    np.save(tmp_path / "c.npy", labels)
    with pytest.raises(DatasetError, match=r"negative class labels: 1 .* \(1, 2\) = -1"):
        _check_targets(tmp_path / "c.npy", open_npy(tmp_path / "c.npy"), "classification",
                       chunk=chunk)
    np.save(tmp_path / "ok.npy", np.ones((4, 9), dtype=">f8"))  # big-endian, odd size
    _check_targets(tmp_path / "ok.npy", open_npy(tmp_path / "ok.npy"), "regression",
                   chunk=chunk)


def test_a_truncated_targets_file_is_named(tmp_path):
    np.save(tmp_path / "y.npy", np.ones((4, 1000), dtype=np.float32))
    y = open_npy(tmp_path / "y.npy")
    with open(tmp_path / "y.npy", "r+b") as fh:
        fh.truncate(int(y.offset) + 100)
    with pytest.raises(DatasetError, match="short read"):
        _check_targets(tmp_path / "y.npy", y, "regression", chunk=256)


def test_a_two_by_two_edge_array_is_ambiguous(tmp_path):
    from disenkg.datasets.arrays import load_edges

    np.save(tmp_path / "e.npy", np.array([[0, 1], [1, 2]]))
    with pytest.raises(DatasetError, match=r"shape \(2, 2\) is ambiguous"):
        load_edges(tmp_path / "e.npy", 3)
    (tmp_path / "e.csv").write_text("0,1\n1,2\n")
    assert load_edges(tmp_path / "e.csv", 3).tolist() == [[0, 1], [1, 2]]


def test_a_class_seen_only_in_test_has_an_output(tmp_path):
    """Classes come from every label of the file: a label that no training sample has no
    longer indexes past the head (it raised in cross_entropy)."""
    import torch

    from disenkg.datasets.arrays import ArrayDataset, make_synthetic
    from disenkg.training.node import run_array
    from disenkg.training.node_config import ArrayTaskConfig

    p = make_synthetic(tmp_path / "syn", shape=(1, 12, 2, 4, 2), extra_edges=2)
    y = np.zeros((1, 12, 4), dtype=np.int64)
    y[0, :, 1] = 1
    y[0, 11, 2] = 5  # one label of 5, wherever the split puts sample 11
    np.save(tmp_path / "y.npy", y)
    ds = ArrayDataset(features=p["features"], targets=tmp_path / "y.npy",
                      target_kind="classification")
    assert ds.num_classes == 6
    edges = torch.tensor([[0, 1, 2], [1, 2, 3]])
    out = run_array(ds, edges, ArrayTaskConfig(epochs=1, batch_size=4), seed=0,
                    use_graph=False, device="cpu")
    assert 0 <= out["test_accuracy"] <= 1
