"""The CLI builds scorers from the registry: every registered scorer from the flags, and a
newly registered one without arguments."""

from __future__ import annotations

import pytest

from disenkg.cli.link import resolve_args
from disenkg.cli.link_models import MODELS, SCORER_KWARGS, build_scorer, fill_defaults
from disenkg.datasets import KGDataset
from disenkg.nn.scorers import SCORERS, DistMultScorer


@pytest.fixture(scope="module")
def umls():
    from tests.conftest import kg_archive

    return KGDataset.load(kg_archive("umls"))


def flags(argv, umls):
    args, _ = resolve_args(argv)
    fill_defaults(args, MODELS.get(args.model), umls)
    return args


def test_flag_table_names_only_registered_scorers():
    assert set(SCORER_KWARGS) <= set(SCORERS.names())


@pytest.mark.parametrize("name", sorted(SCORERS.names()))
def test_every_registered_scorer_is_built_from_the_flags(name, tmp_path, umls):
    args = flags(["--dataset", "umls", "--scorer", name, "--channels", "12",
                            "--k-h", "4", "--k-w", "3", "--num-filters", "5", "--kernel-size", "3",
                  "--gamma", "7", "--output-dir", str(tmp_path)], umls)
    scorer = build_scorer(args)
    assert isinstance(scorer, SCORERS.get(name))
    if name in ("interacte", "conve"):
        conv = scorer.interaction
        assert (conv.embedding_dim, conv.k_h, conv.k_w) == (12, 4, 3)
    if name.startswith("transe"):
        assert scorer.gamma == 7


def test_a_newly_registered_scorer_is_built_without_arguments(tmp_path, monkeypatch, umls):
    class Mine(DistMultScorer):
        pass

    monkeypatch.setitem(SCORERS._items, "mine", Mine)
    args = flags(["--dataset", "umls", "--output-dir", str(tmp_path)], umls)
    args.scorer = "mine"
    assert type(build_scorer(args)) is Mine
