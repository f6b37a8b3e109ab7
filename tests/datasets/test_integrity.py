"""Bad input never silently changes a result: archive checksums, one split directory, size
limits, and the dataset checks logged after loading."""

from __future__ import annotations

import io
import logging
import tarfile
import zipfile

import pytest

from disenkg.datasets import DatasetError, KGDataset, read_splits
from disenkg.datasets.triples import MIN_BOMB_BYTES, archive_limit

SPLITS = {"train": "a\tr\tb\nb\tr\tc\nc\ts\ta\n", "valid": "a\ts\tc\n", "test": "b\ts\ta\n"}


def make_tgz(path, files: dict[str, str], mode: str = "w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_every_single_bit_flip_loads_identical_triples_or_raises(tmp_path):
    src = make_tgz(tmp_path / "toy.tar.gz", {f"toy/{k}.txt": v for k, v in SPLITS.items()})
    good = src.read_bytes()
    expected = read_splits(src)
    flipped = tmp_path / "flip.tar.gz"
    outcomes = {"identical": 0, "error": 0}
    for i in range(len(good) * 8):
        data = bytearray(good)
        data[i // 8] ^= 1 << (i % 8)
        flipped.write_bytes(bytes(data))
        try:
            got = read_splits(flipped)
        except DatasetError as err:
            assert "flip.tar.gz" in str(err)
            outcomes["error"] += 1
            continue
        assert got == expected, f"bit {i} changed the triples without an error"
        outcomes["identical"] += 1
    assert outcomes["error"] > 0.8 * len(good) * 8  # header bits (mtime, OS) are harmless


@pytest.mark.parametrize("mode,suffix", [("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_other_compressions_are_checked_too(tmp_path, mode, suffix):
    src = make_tgz(tmp_path / f"toy{suffix}", {f"{k}.txt": v for k, v in SPLITS.items()}, mode)
    assert read_splits(src)["valid"] == [("a", "s", "c")]
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x10
    src.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"cannot read archive .*toy{suffix}"):
        read_splits(src)


def test_splits_from_two_directories_are_an_error(tmp_path):
    files = {f"data/{k}.txt": v for k, v in SPLITS.items()}
    files["old/test.txt"] = "x\tr\ty\n"
    src = make_tgz(tmp_path / "mixed.tar.gz", files)
    with pytest.raises(DatasetError, match=r"split files in 2 directories \(data/: test, "
                                           r"train, valid; old/: test\)"):
        read_splits(src)


def test_missing_split_in_the_archive(tmp_path):
    src = make_tgz(tmp_path / "two.tar.gz", {"d/train.txt": SPLITS["train"],
                                             "d/valid.txt": SPLITS["valid"]})
    with pytest.raises(DatasetError, match=r"missing split file\(s\) test.txt in archive"):
        read_splits(src)


def test_corrupt_zip_names_the_archive(tmp_path):
    zp = tmp_path / "toy.zip"
    with zipfile.ZipFile(zp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in SPLITS.items():
            zf.writestr(f"{k}.txt", v * 50)
    data = bytearray(zp.read_bytes())
    data[60] ^= 0xFF  # inside the first member's deflate stream
    zp.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"cannot read archive .*toy.zip: it is corrupt"):
        read_splits(zp)
    zp.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DatasetError, match=r"cannot read archive .*toy.zip"):
        read_splits(zp)


def test_decompression_bomb_is_refused_unless_allowed(tmp_path):
    files = {f"{k}.txt": v for k, v in SPLITS.items()}
    files["train.txt"] = SPLITS["train"] + "\n" * (40 << 20)  # 40 MB of blank lines
    src = make_tgz(tmp_path / "bomb.tar.gz", files)
    assert src.stat().st_size < 100_000
    assert archive_limit(src, None) == MIN_BOMB_BYTES
    with pytest.raises(DatasetError, match=r"archive .*bomb.tar.gz inflates beyond 32 MiB") as e:
        read_splits(src)
    assert "--max-archive-mb" in e.value.hint
    assert len(read_splits(src, max_bytes=64 << 20)["train"]) == 3


def test_real_archives_stay_under_the_default_limit():
    from tests.conftest import kg_archive

    p = kg_archive("kinship")
    assert archive_limit(p, None) >= 6 * p.stat().st_size  # text compresses about 6:1


def test_dataset_checks_warn_with_counts_and_examples(tmp_path, caplog):
    d = tmp_path / "kg"
    d.mkdir()
    (d / "train.txt").write_text("a\tr\tb\nb\tr\tc\n")
    (d / "valid.txt").write_text("a\tr\tb\nc\tq\tz\n")
    (d / "test.txt").write_text("a\tr\tc\n")
    with caplog.at_level(logging.WARNING):
        ds = KGDataset.load(d)
    found = ds.check()
    assert len(found) == 3
    assert found[0].startswith("1 valid triples use 1 entities never seen in train, e.g. "
                               "['z']")
    assert found[1].startswith("1 valid triples use 1 relations never seen in train, e.g. "
                               "['q']")
    assert found[2].startswith("1 valid triples also occur in train") and \
        "('a', 'r', 'b')" in found[2]
    assert [r.levelname for r in caplog.records].count("WARNING") == 3


def test_clean_dataset_has_no_findings(umls_path):
    assert KGDataset.load(umls_path).check() == []
