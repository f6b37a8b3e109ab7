"""KG loading: real archives, tolerated quirks, clear errors, sparse query indices."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from disenkg.datasets import DatasetError, KGDataset, QueryIndex, read_splits, sources
from disenkg.datasets.sources import Source, download, resolve

TRIPLES = {
    "train": "a\tr1\tb\nb\tr2\tc\nc\tr1\ta\na\tr2\tc\n",
    "valid": "a\tr1\tc\n",
    "test": "b\tr1\ta\n",
}


def write_dir(root: Path, splits=TRIPLES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in splits.items():
        (root / f"{name}.txt").write_text(text)
    return root


def test_real_umls_counts(umls_path):
    ds = KGDataset.load(umls_path)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (5216, 652, 661)
    assert ds.num_entities == 135 and ds.num_relations == 46
    # ids are contiguous and every split maps into them
    for split in (ds.train, ds.valid, ds.test):
        assert split[:, [0, 2]].max() < ds.num_entities
        assert split[:, 1].max() < ds.num_relations


def test_bundled_default_loads_by_name_without_network(monkeypatch):
    monkeypatch.delenv("DISENKG_DATA", raising=False)
    monkeypatch.setattr(sources, "download", lambda *a, **k: pytest.fail("no download"))
    ds = KGDataset.load("UMLS")
    assert ds.num_entities == 135


def test_ids_first_appearance_order(tmp_path):
    ds = KGDataset.load(write_dir(tmp_path / "toy"))
    assert ds.entities == ["a", "b", "c"] and ds.relations == ["r1", "r2"]
    assert ds.train.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 0], [0, 1, 2]]


def test_quirks_tolerated(tmp_path):
    quirky = {
        "train": "\ufeffa\tr1\tb  \r\n\r\nb\tr2\tc\r\nc\tr1\ta\na\tr2\tc\n\n",
        "valid": "a r1 c\n",  # spaces instead of tabs
        "test": "b\tr1\ta",  # no final newline
    }
    d = tmp_path / "quirky"
    d.mkdir()
    for name, text in quirky.items():
        (d / f"{name}.txt").write_bytes(text.encode("utf-8"))
    a = KGDataset.load(d)
    b = KGDataset.load(write_dir(tmp_path / "clean"))
    assert a.entities == b.entities and torch.equal(a.train, b.train)
    assert torch.equal(a.valid, b.valid) and torch.equal(a.test, b.test)


def test_duplicates_removed_with_one_warning(tmp_path, caplog):
    splits = dict(TRIPLES, train=TRIPLES["train"] + "a\tr1\tb\na\tr1\tb\n")
    with caplog.at_level(logging.WARNING):
        ds = KGDataset.load(write_dir(tmp_path / "d", splits))
    assert len(ds.train) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "removed 2 duplicate" in warnings[0].getMessage()


@pytest.mark.parametrize("bad,match", [
    ("a\tr1\tb\nb\tr2\n", r"train.txt line 2: expected 3 .* got 2"),
    ("a\tr1\tb\tc\n", r"train.txt line 1: expected 3 .* got 4"),
    ("a\t\tb\n", r"train.txt line 1"),
    ("\n  \n", r"train.txt: the split file holds no triples"),
])
def test_malformed_train_names_file_and_line(tmp_path, bad, match):
    d = write_dir(tmp_path / "d", dict(TRIPLES, train=bad))
    with pytest.raises(DatasetError, match=match):
        KGDataset.load(d)


def test_missing_split(tmp_path):
    d = write_dir(tmp_path / "d", {"train": TRIPLES["train"], "test": TRIPLES["test"]})
    with pytest.raises(DatasetError, match="missing split file .*valid.txt"):
        KGDataset.load(d)


def test_archives(tmp_path):
    tgz = tmp_path / "toy.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, text in TRIPLES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"toy/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zp = tmp_path / "toy.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for name, text in TRIPLES.items():
            zf.writestr(f"{name}.txt", text)
    a, b = KGDataset.load(tgz), KGDataset.load(zp)
    assert a.name == "toy" and torch.equal(a.train, b.train)


def test_unreadable_archive(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetError, match="cannot read archive .*broken.tar.gz"):
        read_splits(bad)
    badzip = tmp_path / "broken.zip"
    badzip.write_bytes(b"PK nope")
    with pytest.raises(DatasetError, match="cannot read archive .*broken.zip"):
        read_splits(badzip)


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="neither an existing path nor a known name"):
        resolve(str(tmp_path / "nope"))


def test_download_verifies_checksum(tmp_path, umls_path):
    good = hashlib.sha256(umls_path.read_bytes()).hexdigest()
    src = Source("umls", "umls.tar.gz", umls_path.resolve().as_uri(), good)
    path = download(src, tmp_path / "cache")
    assert KGDataset.load(path).num_entities == 135
    bad = Source("umls", "umls.tar.gz", umls_path.resolve().as_uri(), "0" * 64)
    with pytest.raises(DatasetError, match="checksum mismatch .* the file was deleted"):
        download(bad, tmp_path / "cache2")
    assert list((tmp_path / "cache2").iterdir()) == []


def test_corrupt_cached_file_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("DISENKG_CACHE", str(tmp_path))
    monkeypatch.setattr(sources, "BUNDLED_DATA", tmp_path / "empty")
    monkeypatch.delenv("DISENKG_DATA", raising=False)
    (tmp_path / "WN18RR.tar.gz").write_bytes(b"corrupt")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        resolve("WN18RR", allow_download=False)
    assert not (tmp_path / "WN18RR.tar.gz").exists()


def test_lookup_order(tmp_path, monkeypatch, umls_path):
    env = tmp_path / "env"
    env.mkdir()
    (env / "umls.tar.gz").write_bytes(umls_path.read_bytes())
    monkeypatch.setenv("DISENKG_DATA", str(env))
    assert resolve("umls") == env / "umls.tar.gz"
    explicit = write_dir(tmp_path / "explicit" / "umls")
    assert resolve("umls", data_dir=tmp_path / "explicit") == explicit
    monkeypatch.delenv("DISENKG_DATA")
    assert resolve("umls").parent == sources.BUNDLED_DATA


def brute_force_index(triples, R):
    answers = {}
    for h, r, t in triples.tolist():
        answers.setdefault((h, r), set()).add(t)
        answers.setdefault((t, r + R), set()).add(h)
    return answers


def test_query_index_matches_brute_force(umls_path):
    ds = KGDataset.load(umls_path)
    idx = ds.training_index()
    ref = brute_force_index(ds.train, ds.num_relations)
    assert len(idx) == len(ref)
    ids = torch.randperm(len(idx))[:50]
    rows, cols = idx.batch(ids)
    for i, q in enumerate(ids.tolist()):
        h, r = idx.queries[q].tolist()
        assert set(cols[rows == i].tolist()) == ref[(h, r)]
    # lookup of arbitrary queries, including unknown ones
    heads = torch.tensor([0, 1, 134])
    rels = torch.tensor([0, 50, 91])
    rows, cols = idx.lookup(heads, rels)
    for i in range(3):
        want = ref.get((heads[i].item(), rels[i].item()), set())
        assert set(cols[rows == i].tolist()) == want


def test_filter_index_covers_all_splits(tmp_path):
    ds = KGDataset.load(write_dir(tmp_path / "toy"))
    f = ds.filter_index()
    rows, cols = f.lookup(torch.tensor([0]), torch.tensor([0]))  # (a, r1) -> b (train), c (valid)
    assert sorted(cols.tolist()) == [1, 2]
    rows, cols = f.lookup(torch.tensor([0]), torch.tensor([2]))  # (a, r1^-1) -> c (train), b (test)
    assert sorted(cols.tolist()) == [1, 2]


def test_graph_has_inverse_edges(tmp_path):
    ds = KGDataset.load(write_dir(tmp_path / "toy"))
    ei, et = ds.graph()
    E = len(ds.train)
    assert ei.shape == (2, 2 * E) and torch.equal(ei[:, E:], ei[:, :E].flip(0))
    assert torch.equal(et[E:], et[:E] + ds.num_relations)


def test_query_index_is_sparse():
    idx = QueryIndex(torch.tensor([[0, 0, 1]]), num_entities=10**6, num_relations=1)
    assert idx.answers.numel() == 2 and len(idx) == 2


def test_query_index_is_compact_and_exact_where_int32_would_overflow():
    small = QueryIndex(torch.tensor([[0, 0, 1], [2, 1, 1]]), num_entities=3, num_relations=2)
    assert {small.keys.dtype, small.indptr.dtype, small.answers.dtype} == {torch.int32}
    N, R = 2**27, 16  # query keys beyond int32: stored as int64, looked up exactly
    big = QueryIndex(torch.tensor([[0, 0, N - 1], [N - 2, R - 1, 3]]), num_entities=N,
                     num_relations=R)
    assert big.keys.dtype == torch.long and big.answers.dtype == torch.int32
    rows, cols = big.lookup(torch.tensor([0, N - 1, N - 2, 3, N - 2]),
                            torch.tensor([0, R, R - 1, 2 * R - 1, 0]))
    assert rows.tolist() == [0, 1, 2, 3] and cols.tolist() == [N - 1, 0, 3, N - 2]
    assert big.pairs().tolist() == sorted([[0, 0], [N - 1, R], [N - 2, R - 1], [3, 2 * R - 1]])
    with pytest.raises(ValueError, match="overflow the index's 64-bit"):
        QueryIndex(torch.tensor([[0, 0, 1]]), num_entities=2**31 + 5, num_relations=1)


def test_query_index_pairs_and_restrict_match_brute_force(umls_path):
    ds = KGDataset.load(umls_path)
    idx = ds.filter_index()
    ref = brute_force_index(torch.cat([ds.train, ds.valid, ds.test]), ds.num_relations)
    ids = torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))[:97]
    assert torch.equal(idx.pairs(ids), idx.queries[ids])
    assert idx.pairs(ids).dtype == torch.long
    lo, hi = 40, 101  # an odd slice of UMLS's 135 entities
    part = idx.restrict(lo, hi)
    assert len(part) == len(idx) and torch.equal(part.keys, idx.keys)
    rows, cols = part.batch(ids)
    for i, (h, r) in enumerate(idx.pairs(ids).tolist()):
        assert sorted(cols[rows == i].tolist()) == sorted(
            e for e in ref[(h, r)] if lo <= e < hi)
    q = idx.pairs(ids)
    rows, cols = part.lookup(q[:, 0], q[:, 1])
    assert all(lo <= c < hi for c in cols.tolist())
    lean = idx.restrict(lo, hi, keep_queries=False)  # lookups alike, fewer queries
    assert len(lean) < len(idx) and torch.all(lean.indptr[1:] > lean.indptr[:-1])
    heads, rels = torch.randint(0, ds.num_entities, (300,)), torch.randint(0, 92, (300,))
    for a, b in zip(part.lookup(heads, rels), lean.lookup(heads, rels)):
        assert torch.equal(a, b)
    # the shards' answers together are the whole index's, query by query
    bounds = [0, 40, 101, ds.num_entities]
    parts = [idx.restrict(a, b) for a, b in zip(bounds, bounds[1:])]
    assert sum(len(p.answers) for p in parts) == len(idx.answers)
    assert idx.restrict(0, ds.num_entities).nbytes() == idx.nbytes()


# ------------------------------------------------------------------ text conventions (#31)
def test_comments_and_a_header_are_skipped_with_a_warning(caplog):
    import logging

    from disenkg.datasets.triples import parse_triples

    text = "# exported by tool X\nhead\trelation\ttail\na\tr\tb\n  # note\nb\tr\tc\n"
    with caplog.at_level(logging.WARNING):
        assert parse_triples(text, "train.txt") == [("a", "r", "b"), ("b", "r", "c")]
    assert "train.txt: skipped 2 comment line(s) starting with '#' (first: line 1) and a " \
           "header at line 2" in caplog.text
    # a header-like line after data is data (an entity may be called "head")
    assert parse_triples("a\tr\tb\nhead\trelation\ttail\n", "f")[-1] == \
        ("head", "relation", "tail")


def test_only_newline_ends_a_line():
    from disenkg.datasets.triples import parse_triples

    names = ["a\u2028b", "c\x1cd", "e\x1df", "g\x85h", "i\u2029j"]
    text = "".join(f"{n}\tr\t{n}x\r\n" for n in names)
    got = parse_triples(text, "f")
    assert [h for h, _, _ in got] == names and len(got) == len(names)
    assert parse_triples("a  r   b\n", "f") == [("a", "r", "b")]  # no tab: ASCII blanks
    with pytest.raises(DatasetError, match="line 1: expected 3 tab-separated fields"):
        parse_triples("a  r\tb\n", "f")  # a tab makes tabs the separator


def test_a_kg_whose_query_count_is_one_mod_the_batch_trains(tmp_path):
    """ConvE's batch norm: a last batch of one query joins the one before."""
    from disenkg.training.link import batch_bounds

    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(1, 4) == [(0, 1)]
    d = tmp_path / "kg"
    d.mkdir()
    # 4 triples -> 8 queries with distinct (h, r) both ways; batch 7 leaves one
    (d / "train.txt").write_text("a\tr\tb\nb\tr\tc\nc\tr\td\nd\tr\te\n")
    (d / "valid.txt").write_text("a\tr\tc\n")
    (d / "test.txt").write_text("b\tr\td\n")
    from disenkg.cli.link import main as link_main

    m = link_main(["--dataset", str(d), "--model", "conve", "--epochs", "1", "--batch-size",
                   "7", "--no-progress", "--output-dir", str(tmp_path / "o")])
    assert m["epochs_run"] == 1
