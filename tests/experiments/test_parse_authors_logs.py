"""The authors' log parser on a log written in their format (two validation epochs, early
stopping, a test block), and its error on a mangled metric line."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from tests.conftest import REPO

SETTINGS = ("{'name': 'X_09_09_2021', 'dataset': 'FB15k-237', 'score_func': 'distmult', "
            "'opn': 'cross', 'batch_size': 128, 'num_factors': 2, 'lr': 0.001}")
LOG = f"""2021-09-09 01:00:00,000 - X - [INFO] - {SETTINGS}
2021-09-09 01:00:01,000 - X - [INFO] - num_ent 14541 num_rel 237
2021-09-09 01:30:00,000 - X - [INFO] - [Evaluating Epoch 0 valid]:
\tMRR: Tail : 0.00112, Head : 0.00079, Avg : 0.00095

2021-09-09 01:30:01,000 - X - [INFO] - [Epoch 0]: Training Loss: 0.16, Best valid MRR: 0.00095
2021-09-09 02:00:00,000 - X - [INFO] - [Evaluating Epoch 1 valid]:
\tMRR: Tail : 0.3, Head : 0.1, Avg : 0.2

2021-09-09 02:00:01,000 - X - [INFO] - [Epoch 1]: Training Loss: 0.1, Best valid MRR: 0.2
2021-09-09 02:00:02,000 - X - [INFO] - Early Stopping!!
2021-09-09 02:00:02,000 - X - [INFO] - Loading best model, Evaluating on Test data
2021-09-09 02:01:00,000 - X - [INFO] - [Evaluating Epoch 1 test]:
\tMRR: Tail : 0.45012, Head : 0.26335, Avg : 0.35673
\tMR: Tail : 129.1, Head : 218.51, Avg : 173.8
\tHit-1: Tail : 0.35087, Head : 0.17468, Avg : 0.26278
\tHit-3: Tail : 0.49736, Head : 0.29253, Avg : 0.39495
\tHit-10: Tail : 0.64507, Head : 0.44415, Avg : 0.54461
"""


@pytest.fixture(scope="module")
def parser():
    spec = importlib.util.spec_from_file_location(
        "parse_authors_logs", REPO / "experiments" / "parse_authors_logs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validation_and_test_rows(parser, tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "X").write_text(LOG)
    out = tmp_path / "authors.csv"
    assert parser.main([str(tmp_path), "--out", str(out)]) == 0
    valid = list(csv.DictReader(out.open()))
    assert [(r["epoch"], r["valid_mrr"], r["valid_mrr_tail"], r["hours"]) for r in valid] == \
        [("1", "0.00095", "0.00112", "0.5"), ("2", "0.2", "0.3", "1.0")]
    assert valid[0]["score_func"] == "distmult" and valid[0]["num_factors"] == "2"
    (test,) = list(csv.DictReader((tmp_path / "authors_test.csv").open()))
    assert test["best_epoch"] == "2" and float(test["test_mrr_avg"]) == 0.35673
    assert float(test["test_mr_head"]) == 218.51 and float(test["test_hits@10_tail"]) == 0.64507


def test_a_mangled_metric_line_names_file_and_line(parser, tmp_path):
    bad = tmp_path / "X"
    bad.write_text(LOG.replace("\tMRR: Tail : 0.3, Head : 0.1, Avg : 0.2",
                               "\tMRR: Tail : 0.3 Head 0.1"))
    with pytest.raises(ValueError, match=r"X:8: expected 'MRR: Tail : x, Head : y"):
        parser.parse_log(bad)
