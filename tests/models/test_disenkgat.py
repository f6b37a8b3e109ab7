"""DisenKGAT model: equivariance, training lowers the loss, every scorer/order path runs."""

from __future__ import annotations

import pytest
import torch

from disenkg.datasets import KGDataset
from disenkg.models import DisenKGAT
from disenkg.nn.scorers import SCORERS, ConvEScorer, InteractEScorer
from disenkg.training import LinkTrainer, TrainConfig


def small_scorer(name, F=12):
    if name == "interacte":
        return InteractEScorer(embedding_dim=F, k_h=4, k_w=3, num_filters=4, kernel_size=3)
    if name == "conve":
        return ConvEScorer(embedding_dim=F, k_h=4, k_w=3, num_filters=4, kernel_size=3)
    return SCORERS.get(name)()


def small_model(ds, scorer="interacte", **kw):
    ei, et = ds.graph()
    args = dict(num_entities=ds.num_entities, num_relations=ds.num_relations,
                edge_index=ei, edge_type=et, num_components=3, init_dim=8,
                channels=12, scorer=small_scorer(scorer))
    args.update(kw)
    return DisenKGAT(**args)


@pytest.fixture(scope="module")
def umls():
    from tests.conftest import kg_archive

    return KGDataset.load(kg_archive("umls"))


def test_permuting_entity_ids_permutes_outputs(umls):
    torch.manual_seed(0)
    ds = umls
    model = small_model(ds).double().eval()
    N = ds.num_entities
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))  # old id -> new id
    ei, et = ds.graph()
    other = DisenKGAT(num_entities=N, num_relations=ds.num_relations,
                      edge_index=perm[ei], edge_type=et, num_components=3,
                      init_dim=8, channels=12, scorer=small_scorer("interacte")).double().eval()
    state = model.state_dict()
    state["init_embed"] = torch.empty_like(state["init_embed"]).index_copy_(
        0, perm, state["init_embed"])
    state["bias"] = torch.empty_like(state["bias"]).index_copy_(0, perm, state["bias"])
    other.load_state_dict(state)
    with torch.no_grad():
        a, b = model.encode(), other.encode()
        torch.testing.assert_close(b.entity[perm], a.entity)
        h, r = torch.tensor([0, 5, 9]), torch.tensor([1, 3, 60])
        sa = model.score(a, h, r)
        sb = other.score(b, perm[h], r)
        torch.testing.assert_close(sb[:, perm], sa)


def test_training_steps_lower_the_loss(umls, tmp_path):
    torch.manual_seed(0)
    model = small_model(umls)
    cfg = TrainConfig(epochs=1, batch_size=256, lr=0.01, progress=False)
    tr = LinkTrainer(model=model, dataset=umls, config=cfg, output_dir=tmp_path)
    assert tr.aux_optimizer is not None  # CLUB estimators have their own optimiser
    ids = torch.arange(256)
    first = tr.train_step(ids)
    for _ in range(12):
        last = tr.train_step(ids)
    assert last < 0.6 * first


@pytest.mark.parametrize("scorer", sorted(SCORERS.names()))
@pytest.mark.parametrize("order", ["after", "before"])
def test_every_scorer_and_order_trains(umls, scorer, order):
    torch.manual_seed(0)
    model = small_model(umls, scorer=scorer, order=order, mi_estimator="club_s")
    reps = model.encode()
    h, r = umls.train[:32, 0], umls.train[:32, 1]
    target = (torch.arange(32), umls.train[:32, 2])
    loss = model.loss(reps, h, r, target, label_smoothing=0.1) + model.regularization(reps, h)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.init_embed.grad is not None and model.init_embed.grad.abs().sum() > 0
    with torch.no_grad():
        s = model.score(model.encode(), h, r)
    assert s.shape == (32, umls.num_entities) and torch.isfinite(s).all()


def test_mi_reuse_vs_recompute(umls):
    torch.manual_seed(0)
    m = small_model(umls, mi_recompute=True)
    reps = m.encode()
    h = umls.train[:16, 0]
    aux = m.auxiliary_loss(reps, h)
    aux.backward()
    assert m.init_embed.grad is None  # estimator step never reaches the encoder
    assert all(p.grad is not None for p in m.auxiliary_parameters())


def test_no_mi_and_zero_layers(umls):
    m = small_model(umls, mi_estimator=None, num_layers=0)
    assert m.regularization(m.encode(), torch.tensor([0])) is None
    assert m.auxiliary_parameters() == []


def test_bad_arguments(umls):
    with pytest.raises(ValueError, match="unknown order 'mid'"):
        small_model(umls, order="mid")
    with pytest.raises(ValueError, match="unknown component attention 'foo'"):
        small_model(umls, component_attention="foo")
    with pytest.raises(ValueError, match=r"edge_type must have shape \(2,\), got \(3,\)"):
        small_model(umls, edge_index=torch.zeros(2, 2, dtype=torch.long),
                    edge_type=torch.zeros(3, dtype=torch.long))


def test_the_head_receives_the_tails_message_through_the_relation():
    """The authors' convention, owned by the model: built from the natural (head, tail)
    edges, the head of (0, r0, 1) hears entity 1 through r0, the tail hears entity 0
    through the inverse r0 + R, and nothing else reaches either."""
    torch.manual_seed(0)
    ei = torch.tensor([[0, 1], [1, 0]])  # (0, r0, 1) and its inverse (1, r0^-1, 0)
    et = torch.tensor([0, 1])
    model = DisenKGAT(num_entities=3, num_relations=1, edge_index=ei, edge_type=et,
                      num_components=2, init_dim=4, channels=6,
                      scorer=SCORERS.get("distmult")()).double().eval()
    assert model.message_index.tolist() == [[1, 0], [0, 1]]  # rows: source, destination

    def encoded_after(row: int) -> torch.Tensor:
        with torch.no_grad():
            base = model.encode().entity.clone()
            model.init_rel[row] += 1.0
            moved = model.encode().entity
            model.init_rel[row] -= 1.0
        return (moved - base).abs().flatten(1).amax(1)  # change per entity

    forward, inverse = encoded_after(0), encoded_after(1)
    assert forward[0] > 1e-6 and forward[1] == 0 and forward[2] == 0
    assert inverse[1] > 1e-6 and inverse[0] == 0 and inverse[2] == 0


def test_cli_and_direct_construction_build_the_same_model(umls):
    """The CLI passes the dataset's graph as it is; a library user doing the same gets
    the same model (same scores from the same weights)."""
    from disenkg.models.configs import DisenKGATConfig
    from disenkg.models.registry import MODELS

    ei, et = umls.graph()
    a = DisenKGATConfig(num_components=3, init_dim=8, channels=12, num_layers=1,
                        composition="cross", edge_attention="dot_weight",
                        attention_dropout=0.0, encoder_dropout=0.0, layer_bias=False,
                        scorer="distmult", component_attention="dot_rel", order="after",
                        mi_estimator="none", encoder_impl="auto")
    cli = MODELS.get("disenkgat").build(umls, a).double().eval()
    direct = DisenKGAT(num_entities=umls.num_entities, num_relations=umls.num_relations,
                       edge_index=ei, edge_type=et, num_components=3, init_dim=8,
                       channels=12, scorer=SCORERS.get("distmult")(), mi_estimator=None,
                       mi_weight=0.0, attention_dropout=0.0,
                       encoder_dropout=0.0).double().eval()
    direct.load_state_dict(cli.state_dict())
    h, r = torch.tensor([0, 7, 100]), torch.tensor([0, 45, 50])
    with torch.no_grad():
        torch.testing.assert_close(direct.score(direct.encode(), h, r),
                                   cli.score(cli.encode(), h, r), rtol=0, atol=0)
