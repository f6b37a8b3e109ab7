"""Scorers are built from the registry: every registered scorer from its settings, and a
newly registered one without arguments."""

from __future__ import annotations

import pytest

from disenkg.cli.link import resolve_args
from disenkg.datasets import KGDataset
from disenkg.models.registry import SCORER_KWARGS, build_scorer
from disenkg.nn.scorers import SCORERS, DistMultScorer


@pytest.fixture(scope="module")
def umls():
    from tests.conftest import kg_archive

    return KGDataset.load(kg_archive("umls"))


def flags(argv, umls):
    config, _ = resolve_args(argv)
    return config.derive(umls)[0]


def test_flag_table_names_only_registered_scorers():
    assert set(SCORER_KWARGS) <= set(SCORERS.names())


@pytest.mark.parametrize("name", sorted(SCORERS.names()))
def test_every_registered_scorer_is_built_from_the_flags(name, tmp_path, umls):
    argv = ["--dataset", "umls", "--scorer", name, "--channels", "12",
            "--output-dir", str(tmp_path)]
    if name in ("interacte", "conve"):
        argv += ["--k-h", "4", "--k-w", "3", "--num-filters", "5", "--kernel-size", "3"]
    if name.startswith("transe"):
        argv += ["--gamma", "7"]
    config = flags(argv, umls)
    scorer = build_scorer(config.model)
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
    config = flags(["--dataset", "umls", "--scorer", "mine", "--preset", "none",
                    "--output-dir", str(tmp_path)], umls)
    assert type(build_scorer(config.model)) is Mine
