"""experiments/compare_reference.py without the authors' code: the patched scratch copy,
the UMLS split files written for it, and the report (the runs themselves need the
authors' checkout and take hours; see experiments/results/reference_umls.md)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, kg_archive

sys.path.insert(0, str(REPO / "experiments"))
compare = pytest.importorskip("compare_reference")


def test_prepare_reference_patches_a_copy_and_writes_umls(tmp_path):
    checkout = tmp_path / "DisenKGAT"
    checkout.mkdir()
    (checkout / "run.py").write_text("from helper import *\n")
    (checkout / "helper.py").write_text("import numpy as np\n")
    loader = "mask = np.ones([5], dtype=np.bool)\n"
    (checkout / "data_loader.py").write_text(loader)
    (checkout / "log").mkdir()
    (checkout / "log" / "old").write_text("x")
    ref = compare.prepare_reference(checkout, tmp_path / "scratch", kg_archive("umls"))
    assert (ref / "helper.py").read_text().startswith("import traceback\n")
    assert "dtype=bool)" in (ref / "data_loader.py").read_text()
    assert (checkout / "data_loader.py").read_text() == loader  # the checkout is untouched
    assert not (ref / "log" / "old").exists()
    lines = (ref / "data" / "umls" / "train.txt").read_text().splitlines()
    assert len(lines) == 5216 and len(lines[0].split("\t")) == 3
    with pytest.raises(SystemExit, match="no run.py"):
        compare.prepare_reference(tmp_path / "scratch", tmp_path / "s2", kg_archive("umls"))


def test_report_lists_both_codes(tmp_path):
    pkg = {"seconds": 20.0, "curve": [0.3, 0.5, 0.6, 0.65],
           "test": {"mrr": 0.7, "hits@1": 0.6, "hits@10": 0.9}}
    ref = {"seconds": 80.0, "curve": [0.1, 0.4, 0.55, 0.6],
           "test": {"test_mrr_avg": 0.66, "test_hits@1_avg": 0.55, "test_hits@10_avg": 0.88}}
    out = tmp_path / "r.md"
    compare.write_report({"package": {0: pkg}, "reference": {0: ref}}, 4, out)
    text = out.read_text()
    assert "| package | 0 | 0.7000 | 0.6000 | 0.9000 | 0.6500 | 5.00 |" in text
    assert "| reference | 0 | 0.6600 | 0.5500 | 0.8800 | 0.6000 | 20.00 |" in text
    assert "| 4 | 0.6500 | 0.6000 |" in text
