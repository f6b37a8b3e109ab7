"""Array loader: lazy items, clear errors for mismatched shapes, dtypes and graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disenkg.datasets import DatasetError
from disenkg.datasets.arrays import ArrayDataset, load_edges, make_synthetic, split_indices


@pytest.fixture
def synth(tmp_path):
    return make_synthetic(tmp_path / "syn", shape=(2, 10, 3, 7, 2), extra_edges=4)


def test_items_and_planted_target(synth):
    ds = ArrayDataset(features=synth["features"], targets=synth["targets"],
                      target_kind="regression")
    assert len(ds) == 20 and ds.num_nodes == 7 and ds.in_channels == 6
    x, y = ds[13]  # group 1, sample 3
    raw = np.load(synth["features"])[1, 3]  # (T, N, F)
    torch.testing.assert_close(x, torch.from_numpy(raw).permute(1, 0, 2).reshape(7, 6))
    assert y.shape == (7,) and y.dtype == torch.float32
    assert isinstance(ds.x, np.memmap)  # opened lazily


def test_feature_errors(tmp_path, synth):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 10, 3, 7), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"\(G, S, T, N, F\), got \(2, 10, 3, 7\)"):
        ArrayDataset(features=bad, targets=synth["targets"], target_kind="regression")
    np.save(bad, np.zeros((2, 10, 3, 7, 2), dtype=np.int32))
    with pytest.raises(DatasetError, match="must be floating point, got int32"):
        ArrayDataset(features=bad, targets=synth["targets"], target_kind="regression")
    tgt = tmp_path / "t.npy"
    np.save(tgt, np.zeros((2, 9, 7), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"\(G, S, N\) = \(2, 10, 7\) .* got \(2, 9, 7\)"):
        ArrayDataset(features=synth["features"], targets=tgt, target_kind="regression")
    np.save(tgt, np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(DatasetError, match="classification targets must be integers"):
        ArrayDataset(features=synth["features"], targets=tgt, target_kind="classification")
    with pytest.raises(DatasetError, match="does not exist"):
        ArrayDataset(features=tmp_path / "nope.npy", targets=tgt, target_kind="regression")
    with pytest.raises(ValueError, match="unknown target kind 'ordinal'"):
        ArrayDataset(features=synth["features"], targets=tgt, target_kind="ordinal")


def test_nan_sample_is_reported(tmp_path, synth):
    f = np.load(synth["features"])
    f[0, 2, 1, 3, 0] = np.nan
    p = tmp_path / "nan.npy"
    np.save(p, f)
    ds = ArrayDataset(features=p, targets=synth["targets"], target_kind="regression")
    with pytest.raises(DatasetError, match="non-finite values at group 0, sample 2"):
        ds[2]


def test_edge_files(tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text("src,dst\n0,1\n1,2\n\n")
    assert load_edges(csv, 3).tolist() == [[0, 1], [1, 2]]
    csv.write_text("0,1\n1\n")
    with pytest.raises(DatasetError, match=r"e.csv line 2: expected 2 columns"):
        load_edges(csv, 3)
    csv.write_text("0,1\n1,x\n")
    with pytest.raises(DatasetError, match=r"e.csv line 2: non-integer node id"):
        load_edges(csv, 3)
    npy = tmp_path / "e.npy"
    np.save(npy, np.array([[0, 1, 2], [1, 5, 0]]))
    with pytest.raises(DatasetError, match=r"node ids must lie in \[0, 3\) .* got range \[0, 5\]"):
        load_edges(npy, 3)
    np.save(npy, np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(DatasetError, match=r"\(2, E\) or \(E, 2\), got \(3, 3\)"):
        load_edges(npy, 3)
    np.save(npy, np.array([[0, 1, 2], [1, 2, 0]]).T)  # (E, 2) layout
    assert load_edges(npy, 3).shape == (2, 3)


def test_split_indices():
    s = split_indices(100, max_samples=40, seed=0)
    assert [len(v) for v in s.values()] == [28, 6, 6]
    assert len(torch.cat(list(s.values())).unique()) == 40


