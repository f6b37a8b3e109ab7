"""Training loop: loss goes down, resume after a kill equals an uninterrupted run, CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from disenkg.cli.link import build_parser
from disenkg.cli.link import main as link_main
from disenkg.datasets import KGDataset
from disenkg.models import ConvE
from disenkg.run import main as run_main
from disenkg.training import LinkTrainer, TrainConfig
from disenkg.utils import seed_everything


def small_conve(ds):
    return ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                 embedding_dim=20, k_h=5, k_w=4, num_filters=4)


def conve_pair(ds):
    """A small float64 ConvE without dropout (seed 0) and an identical copy."""
    torch.manual_seed(0)
    model = ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                  embedding_dim=20, k_h=5, k_w=4, num_filters=4, input_dropout=0.0,
                  feature_dropout=0.0, hidden_dropout=0.0).double()
    return model, copy.deepcopy(model)


def make_trainer(ds, out, epochs, seed=0):
    seed_everything(seed)
    model = small_conve(ds)
    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=0.01, seed=seed, progress=False,
                      eval_batch_size=512)
    return LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=out)


def test_few_steps_lower_the_loss(umls_path):
    ds = KGDataset.load(umls_path)
    tr = make_trainer(ds, "/tmp/unused", 1)
    ids = torch.arange(256)
    first = tr.train_step(ids)
    for _ in range(15):
        last = tr.train_step(ids)
    assert last < 0.5 * first


def test_resume_after_kill_matches_uninterrupted(umls_path, tmp_path):
    ds = KGDataset.load(umls_path)
    full = make_trainer(ds, tmp_path / "full", epochs=4).fit()

    killed = make_trainer(ds, tmp_path / "killed", epochs=4)
    calls = {"n": 0}
    real_step = killed._step

    def dying_step(ids, check):
        calls["n"] += 1
        if killed.epoch == 2 and calls["n"] > 14:  # mid-way through epoch 3
            raise KeyboardInterrupt
        return real_step(ids, check)

    killed._step = dying_step
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert torch.load(killed.last_path, weights_only=False)["epoch"] == 2

    seed_everything(123)  # a fresh process would not share RNG state
    resumed = make_trainer(ds, tmp_path / "killed", epochs=4, seed=0)
    seed_everything(999)
    out = resumed.fit(resume=True)
    assert out["epochs_run"] == 4
    assert out["test"]["mrr"] == full["test"]["mrr"]
    assert out["valid"] == full["valid"] and out["best_epoch"] == full["best_epoch"]


def test_cli_writes_metrics_schema(umls_path, tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.toml"
    cfg.write_text('epochs = 5\nlr = 0.01\n[model]\nembed_dim = 20\nk_h = 5\nk_w = 4\n'
                   'num_filters = 4\n')
    run_main(["link", "--model", "conve", "--config", str(cfg), "--dataset", str(umls_path),
              "--epochs", "2",
              "--output-dir", str(out), "--no-progress", "--batch-size", "512"])
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"dataset", "model", "config", "best_epoch", "epochs_run",
                      "train_seconds", "valid", "test"}
    assert m["epochs_run"] == 2  # the flag overrides the TOML
    assert m["config"]["lr"] == 0.01 and m["config"]["embed_dim"] == 20  # from the TOML
    for split in ("valid", "test"):
        for block in (m[split], m[split]["head"], m[split]["tail"]):
            assert set(block) >= {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert (out / "best.pt").exists() and (out / "last.pt").exists()


def write_user_kg(tmp_path):
    """A KG the package does not ship: a random graph with a learnable relation pattern."""
    g = torch.Generator().manual_seed(0)
    lines = []
    for h in range(60):
        for r in range(3):
            lines.append(f"e{h}\trel{r}\te{(h * (r + 2) + 1) % 60}")
    perm = torch.randperm(len(lines), generator=g).tolist()
    lines = [lines[i] for i in perm]
    d = tmp_path / "mykg"
    d.mkdir()
    (d / "train.txt").write_text("\n".join(lines[:150]) + "\n")
    (d / "valid.txt").write_text("\n".join(lines[150:165]) + "\n")
    (d / "test.txt").write_text("\n".join(lines[165:]) + "\n")
    return d


def test_cli_on_user_tsv_directory(tmp_path):
    d = write_user_kg(tmp_path)
    m = link_main(["--dataset", str(d), "--epochs", "2", "--output-dir", str(tmp_path / "o"),
                   "--no-progress", "--channels", "20", "--k-h", "5", "--k-w", "4",
                   "--num-filters", "4", "--kernel-size", "3", "--batch-size", "64"])
    assert m["dataset"] == "mykg" and m["model"] == "disenkgat" and 0 < m["test"]["mrr"] <= 1


@pytest.mark.parametrize("impl,precision", [("native", "bf16"), ("chunked", "fp32"),
                                             ("eager", "fp32")])
def test_cli_impls_and_head_precision(tmp_path, impl, precision):
    """The three implementation flags take one vocabulary (README, 'Implementations')."""
    from disenkg.ops import native

    if impl == "native" and not native.available():
        pytest.skip(f"native kernels: {native.unavailable_reason()}")
    d = write_user_kg(tmp_path)
    m = link_main(["--dataset", str(d), "--epochs", "2", "--output-dir", str(tmp_path / "o"),
                   "--no-progress", "--channels", "20", "--k-h", "5", "--k-w", "4",
                   "--num-filters", "4", "--kernel-size", "3", "--batch-size", "64",
                   "--image-chunk", "32", "--encoder-impl", impl, "--loss-impl", impl,
                   "--head-impl", impl,
                   "--head-precision", precision])
    for flag in ("encoder_impl", "loss_impl", "head_impl"):
        assert m["config"][flag] == impl
    assert m["config"]["head_precision"] == precision
    assert 0 < m["test"]["mrr"] <= 1


def test_config_unknown_key_is_an_error(tmp_path):
    from disenkg.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 1\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]"):
        link_main(["--config", str(cfg)])


def test_every_flag_has_help():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"flag {action.option_strings} has no help text"
    text = parser.format_help()
    for flag in ("--dataset", "--model", "--epochs", "--batch-size", "--lr", "--seed",
                 "--device", "--output-dir", "--config", "--resume", "--eval-every",
                 "--patience"):
        assert flag in text


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1, got 0"):
        TrainConfig(epochs=0)


def test_model_registry_lists_choices():
    from disenkg.models.registry import MODELS

    with pytest.raises(ValueError, match=r"unknown model 'nope'; choose one of \['conve'"):
        MODELS.get("nope")


def test_output_files_are_atomic(tmp_path):
    from disenkg.utils import atomic_write_text

    p = tmp_path / "x.json"
    atomic_write_text("{}", p)
    assert p.read_text() == "{}" and [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_conve_shapes_and_permutation(umls_path):
    ds = KGDataset.load(umls_path)
    model = small_conve(ds).eval()
    reps = model.encode()
    h, r = torch.tensor([0, 5, 7]), torch.tensor([1, 2, 60])
    s = model.score(reps, h, r)
    assert s.shape == (3, ds.num_entities)
    # The K = 1 score is the plain ConvE logit <q, e_n> + b_n.
    q = model.interaction(reps.entity[h], reps.relation[r])
    torch.testing.assert_close(s, q @ reps.entity.T + model.bias)
    with pytest.raises(ValueError, match=r"k_h \* k_w == embedding_dim"):
        ConvE(num_entities=3, num_relations=1, embedding_dim=10, k_h=3, k_w=3)


def test_conve_loss_gradients_match_plain_autograd(umls_path):
    """The subjects' rows come back as a sparse gradient (no table-sized buffer) that
    autograd adds into the scoring's dense one: the table's ``.grad`` is dense and equals
    plain autograd through index_select and a materialised BCE, float64, repeated
    subjects included."""
    ds = KGDataset.load(umls_path)
    model, ref = conve_pair(ds)
    h, r = torch.tensor([3, 3, 17, 100, 3]), torch.tensor([0, 5, 5, 91, 40])
    rows, cols = torch.tensor([0, 1, 2, 4, 4]), torch.tensor([8, 9, 3, 0, 134])
    model.loss(model.encode(), h, r, (rows, cols), label_smoothing=0.1).backward()
    E = ref.entity.weight
    q = ref.interaction(E.index_select(0, h), ref.relation.weight.index_select(0, r))
    y = torch.zeros(len(h), ds.num_entities, dtype=torch.float64)
    y[rows, cols] = 1
    torch.nn.functional.binary_cross_entropy_with_logits(
        q @ E.T + ref.bias, 0.9 * y + 1 / ds.num_entities).backward()
    assert not model.entity.weight.grad.is_sparse
    for (name, p), (_, pr) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, pr.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.slow
def test_default_config_end_to_end(tmp_path):
    """The README main job; full size (``make test-full``) checks the MRR target."""
    from tests.conftest import REPO, cheap

    cfg = str(REPO / "experiments" / "configs" / "umls_small.toml")
    extra = ["--epochs", "1", "--batch-size", "512"] if cheap() else []
    m = link_main(["--config", cfg, "--output-dir", str(tmp_path), "--no-progress", *extra])
    assert m["model"] == "disenkgat" and m["dataset"] == "umls"
    if not cheap():
        assert m["test"]["mrr"] >= 0.85


def test_lr_decay_is_a_function_of_the_epoch(umls_path, tmp_path):
    """``--lr-decay d``: epoch e (1-based) trains at lr * d^(e-1), also after a resume;
    a factor outside (0, 1] is refused by the flag and by TrainConfig."""
    ds = KGDataset.load(umls_path)
    seed_everything(0)
    cfg = TrainConfig(epochs=3, batch_size=512, lr=0.01, lr_decay=0.5, progress=False,
                      eval_batch_size=512)
    tr = LinkTrainer(model=small_conve(ds), dataset=ds, config=cfg, output_dir=tmp_path / "a")
    seen = []
    for _ in range(3):
        tr.train_epoch()
        seen.append(tr.optimizer.param_groups[0]["lr"])
        tr.epoch += 1
    assert seen == pytest.approx([0.01, 0.005, 0.0025])
    with pytest.raises(ValueError, match=r"lr_decay: expected a number in \(0, 1\]"):
        TrainConfig(lr_decay=1.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--lr-decay", "0"])


def _club_step_by_hand(model, index, ids, *, fresh_pass):
    """One step of ``model`` (a copy) with the estimator schedule written out; returns it."""
    import copy

    ref = copy.deepcopy(model)
    aux = ref.auxiliary_parameters()
    aux_ids = {id(p) for p in aux}
    main_opt = torch.optim.Adam([p for p in ref.parameters() if id(p) not in aux_ids], lr=0.01)
    aux_opt = torch.optim.Adam(aux, lr=0.05)
    q = index.queries[ids]
    rows, cols = index.batch(ids)
    heads = q[:, 0]
    torch.manual_seed(1)  # CLUB draws its negative pairs from the global generator
    reps = ref.encode()
    main_opt.zero_grad()
    bce = ref.loss(reps, heads, q[:, 1], (rows, cols), label_smoothing=0.1, impl="eager")
    (bce + 0.5 * ref.mi(reps.entity[heads])).backward()
    main_opt.step()
    if fresh_pass:  # the authors' order: a new encoder pass with the updated parameters
        with torch.no_grad():
            z = ref.encode().entity[heads]
    else:  # the step's own embeddings, from before the update
        z = reps.entity[heads].detach()
    aux_opt.zero_grad()
    ref.mi.learning_loss(z).backward()
    aux_opt.step()
    return ref


@pytest.mark.parametrize("recompute", [False, True])
def test_estimator_schedule_against_a_plain_reference(umls_path, recompute):
    """One trainer step of DisenKGAT with CLUB, float64, no dropout, against the schedule
    written out by hand: the main step (BCE + penalty under the current estimators), then
    the estimators' step on a fresh encoder pass (``mi_recompute=True``, the default and
    the authors' order) or on the step's own embeddings (``False``). The other schedule
    gives other estimator parameters, so the comparison can tell them apart."""
    from disenkg.models import DisenKGAT
    from disenkg.nn.scorers import SCORERS

    ds = KGDataset.load(umls_path)
    ei, et = ds.graph()
    torch.manual_seed(0)
    model = DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                      edge_index=ei, edge_type=et, num_components=3, init_dim=8, channels=12,
                      scorer=SCORERS.get("distmult")(), attention_dropout=0.0,
                      encoder_dropout=0.0, mi_estimator="club_b", mi_weight=0.5,
                      mi_lr=0.05, mi_recompute=recompute).double()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, progress=False, loss_impl="eager",
                      loss_precision="fp32")
    tr = LinkTrainer(model=model, dataset=ds, config=cfg, output_dir="/tmp/unused")
    ids = torch.arange(40, 104)
    same = _club_step_by_hand(model, tr.train_index, ids, fresh_pass=recompute)
    other = _club_step_by_hand(model, tr.train_index, ids, fresh_pass=not recompute)
    torch.manual_seed(1)
    tr.train_step(ids)
    for (name, p), r in zip(model.named_parameters(), same.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12, msg=name)
    mine, theirs = model.auxiliary_parameters(), other.auxiliary_parameters()
    assert any(not torch.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(mine, theirs))


def test_mi_recompute_is_the_default():
    from disenkg.models.configs import DisenKGATConfig

    assert DisenKGATConfig().mi_recompute is True
    assert "mi_recompute" not in vars(build_parser().parse_args([]))  # not given
    assert build_parser().parse_args(["--no-mi-recompute"]).mi_recompute is False


def test_softmax_loss_step_against_a_plain_reference(umls_path):
    """``loss="softmax"``: one trainer step of ConvE (float64, no dropout) equals Adam on
    the plain cross-entropy of the softmax over all entities, target uniform over the
    query's answers mixed with eps / N."""
    ds = KGDataset.load(umls_path)
    model, ref = conve_pair(ds)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, progress=False, loss="softmax",
                      label_smoothing=0.1)
    tr = LinkTrainer(model=model, dataset=ds, config=cfg, output_dir="/tmp/unused")
    ids = torch.arange(10, 74)
    queries = tr.train_index.queries[ids]
    assert len(queries) == 64
    rows, cols = tr.train_index.batch(ids)
    y = torch.zeros(len(ids), ds.num_entities, dtype=torch.float64)
    y[rows, cols] = 1
    t = 0.9 * y / y.sum(1, keepdim=True) + 0.1 / ds.num_entities
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    ref.train()
    logits = ref.score(ref.encode(), queries[:, 0], queries[:, 1])
    want = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
    want.backward()
    opt.step()
    got = tr.train_step(ids)
    assert got == pytest.approx(want.item(), rel=1e-12)
    # gradients (Adam would blow up the round-off in bn0.bias, whose exact gradient is 0
    # under bn1), then the updates of every parameter with a real gradient
    for (name, p), r in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-9, atol=1e-13, msg=name)
        if r.grad.abs().max() > 1e-9:
            torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12, msg=name)


def test_softmax_loss_refuses_what_it_cannot_do(umls_path):
    from disenkg.models import DisenKGAT
    from disenkg.nn.scorers import SCORERS

    with pytest.raises(ValueError, match="loss: 'ce' is not one of"):
        TrainConfig(loss="ce")
    with pytest.raises(ValueError, match="does not run entity-sharded; got entity_shards=2"):
        TrainConfig(loss="softmax", entity_shards=2)
    ds = KGDataset.load(umls_path)
    ei, et = ds.graph()
    model = DisenKGAT(num_entities=ds.num_entities, num_relations=ds.num_relations,
                      edge_index=ei, edge_type=et, num_components=3, init_dim=8, channels=12,
                      scorer=SCORERS.get("distmult")(), order="after")
    reps = model.encode()
    heads, rels = torch.tensor([0, 1]), torch.tensor([0, 0])
    target = (torch.tensor([0, 1]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="needs logits: K = 1 or order 'before', got K = 3"):
        model.softmax_loss(reps, heads, rels, target)
    model.order = "before"  # logit mixing: the mixed logits are the softmax's input
    out = model.softmax_loss(reps, heads, rels, target)
    want = -torch.log_softmax(model.score(reps, heads, rels), 1)[[0, 1], [2, 3]].mean()
    torch.testing.assert_close(out, want)


def test_cli_softmax_loss_refuses_mixed_probabilities_before_training(tmp_path, capsys):
    d = write_user_kg(tmp_path)
    assert run_main(["--dataset", str(d), "--loss", "softmax", "--epochs", "1",
                     "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--loss softmax: the softmax loss needs logits: K = 1 or order 'before'" in err
    assert "Traceback" not in err and not (tmp_path / "o" / "config.json").exists()


def test_cli_softmax_loss_end_to_end(tmp_path):
    d = write_user_kg(tmp_path)
    m = link_main(["--dataset", str(d), "--model", "conve", "--epochs", "2", "--loss",
                   "softmax", "--output-dir", str(tmp_path / "o"), "--no-progress",
                   "--embed-dim", "20", "--k-h", "5", "--k-w", "4", "--num-filters", "4",
                   "--batch-size", "64"])
    assert m["config"]["loss"] == "softmax" and 0 < m["test"]["mrr"] <= 1
    # the trained run's probabilities are the softmax over the entities
    import disenkg

    run = disenkg.load_run(tmp_path / "o")
    top = run.predict([("e0", "rel0", None)], k=100, filter="none")[0]
    assert sum(row["probability"] for row in top) == pytest.approx(1.0, abs=1e-5)
    s = run.score([("e0", "rel0", top[0]["entity"])])[0]
    assert s["probability"] == pytest.approx(top[0]["probability"], rel=1e-6)
