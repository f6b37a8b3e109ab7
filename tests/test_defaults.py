"""The size-derived defaults (disenkg.defaults) and the presets: one test per rule on a tiny
KG, a UMLS-size and an FB15k-237-size input."""

from __future__ import annotations

import json

import pytest

from disenkg.defaults import KGStats, derive_defaults, epoch_seconds

KEYS = ("batch_size", "lr", "channels", "k_h", "k_w", "num_filters", "kernel_size",
        "init_dim", "mi_weight", "epochs", "patience", "min_epochs")
TINY = KGStats(num_entities=10, num_relations=2, num_train=20, num_queries=30)
UMLS = KGStats(num_entities=135, num_relations=46, num_train=5216, num_queries=1560)
FB = KGStats(num_entities=14541, num_relations=237, num_train=272115, num_queries=149689)


def derive(stats, model="disenkgat", **given):
    base = {k: None for k in KEYS}
    base["num_components"] = 3
    base.update(given)
    return {k: v for k, (v, _) in derive_defaults(stats, model=model, given=base).items()}


def test_batch_size_rule():
    assert derive(TINY)["batch_size"] == 32  # floor at 32
    # 1560 / 24 = 65 -> 64, raised to 128 (13 steps per epoch) from 1024 queries
    assert derive(UMLS)["batch_size"] == 128
    assert derive(KGStats(100, 5, 900, 1000))["batch_size"] == 32  # 1000 / 24 -> 32
    assert derive(KGStats(100, 5, 900, 1023))["batch_size"] == 32  # 128 gives < 8 steps
    assert derive(KGStats(100, 5, 9000, 6200))["batch_size"] == 256  # 6200 / 24 = 258
    assert derive(FB)["batch_size"] == 2048  # the authors' value, the ceiling


def test_learning_rate_rule():
    assert derive(UMLS)["lr"] == 0.003 and derive(FB)["lr"] == 0.001
    assert derive(FB, batch_size=512)["lr"] == 0.003  # follows a given batch size


def test_width_rule():
    t, u, f = derive(TINY), derive(UMLS), derive(FB)
    assert (t["channels"], t["k_h"], t["k_w"], t["num_filters"], t["kernel_size"]) == \
        (50, 10, 5, 16, 3)
    assert (u["channels"], u["k_h"], u["k_w"], u["num_filters"], u["kernel_size"],
            u["mi_weight"]) == (100, 10, 10, 32, 5, 0.01)
    assert (f["channels"], f["k_h"], f["k_w"], f["num_filters"], f["kernel_size"],
            f["mi_weight"], f["init_dim"]) == (200, 20, 10, 200, 9, 0.1, 100)
    for d in (t, u, f):
        assert d["k_h"] * d["k_w"] == d["channels"]


def test_width_follows_a_given_channel_count():
    d = derive(UMLS, channels=60)
    assert "channels" not in d and d["k_h"] * d["k_w"] == 60 and d["k_h"] >= d["k_w"]


def test_derived_kernel_fits_the_image_of_a_given_channel_count():
    # FB15k-237's kernel 9 does not fit the 10 x 5 images of 50 channels (stacked: 20 x 5)
    d = derive(FB, channels=50)
    assert (d["k_h"], d["k_w"], d["kernel_size"]) == (10, 5, 5)
    assert derive(FB, channels=50, kernel_size=3).get("kernel_size") is None  # given: kept
    assert derive(FB)["kernel_size"] == 9  # fits: unchanged


def test_conve_width_rule():
    base = {k: None for k in ("batch_size", "lr", "embed_dim", "k_h", "k_w", "num_filters",
                              "kernel_size", "epochs", "patience", "min_epochs")}
    c = {k: v for k, (v, _) in derive_defaults(FB, model="conve", given=base).items()}
    assert (c["embed_dim"], c["k_h"], c["k_w"], c["num_filters"], c["kernel_size"]) == \
        (200, 20, 10, 32, 3)


def test_epoch_rule_fits_the_budget_and_is_clamped():
    u = derive(UMLS)
    assert u["epochs"] == 500  # UMLS: ~0.57 s per epoch, 8 minutes -> the ceiling
    assert derive(TINY)["epochs"] == 500  # a tiny KG hits the ceiling
    assert derive(FB)["epochs"] == 20  # FB15k-237 at this width: the floor (use its preset)
    wn = KGStats(num_entities=1748, num_relations=11, num_train=3087, num_queries=4052)
    est = epoch_seconds(wn, batch_size=128, dim=100, k_h=10, k_w=10, num_filters=32,
                        kernel_size=5, num_components=3)
    # the study's WN18RR cut: 32 steps of 0.026 + 1748 * 15e-6 s, 0.93 GFLOP / 110 GFLOPS
    assert est == pytest.approx(32 * (0.026 + 1748 * 15e-6)
                                + 9 * 4052 * (2 * 32 * 25 * 200 + 2 * 32 * 200 * 100
                                              + 2 * 100 * 1748) / 110e9)
    assert 2.1 < est < 2.5  # measured 2.28 s per epoch in the study
    assert derive(wn)["epochs"] == int(480 / est) == 207
    shorter = {k: v for k, (v, _) in derive_defaults(
        wn, model="disenkgat", given={**{k: None for k in KEYS}, "num_components": 3},
        budget_minutes=4).items()}
    assert shorter["epochs"] == int(240 / est)


def test_early_stopping_rule():
    u = derive(UMLS)
    assert u["patience"] == max(20, u["epochs"] // 5) and u["min_epochs"] == u["epochs"] // 5
    assert derive(UMLS, epochs=50)["patience"] == 20


def test_given_values_are_never_replaced():
    d = derive(UMLS, batch_size=100, lr=0.01, epochs=7, patience=3, min_epochs=1)
    assert not {"batch_size", "lr", "epochs", "patience", "min_epochs"} & set(d)


def test_reasons_are_given():
    base = {**{k: None for k in KEYS}, "num_components": 3}
    for key, (_, why) in derive_defaults(UMLS, model="disenkgat", given=base).items():
        assert why, key


def test_empty_kg_is_refused():
    with pytest.raises(ValueError, match="needs training triples"):
        derive(KGStats(5, 1, 0, 0))


# ---------------------------------------------------------------------- CLI: presets
def test_named_dataset_uses_its_preset_and_flags_override(tmp_path, umls_path):
    from disenkg.cli.link import resolve_args

    c, _ = resolve_args(["--dataset", "umls", "--output-dir", str(tmp_path / "a")])
    assert c.run.preset == "umls" and c.training.batch_size == 128 and c.training.epochs == 200
    assert c.sources["batch_size"] == "preset" and c.sources["seed"] == "default"
    c, _ = resolve_args(["--dataset", "umls", "--batch-size", "32", "--output-dir",
                         str(tmp_path / "b")])
    assert c.training.batch_size == 32 and c.training.lr == 0.003
    assert c.sources["batch_size"] == "flag"
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 7\n")
    c, _ = resolve_args(["--dataset", "kinship", "--config", str(cfg), "--output-dir",
                         str(tmp_path / "c")])
    assert c.run.preset == "kinship" and c.training.epochs == 7 and c.training.patience == 20
    assert c.sources["epochs"] == "config"
    c, _ = resolve_args(["--dataset", "umls", "--preset", "none", "--output-dir",
                         str(tmp_path / "d")])
    assert c.run.preset is None and c.training.batch_size is None  # derived after loading
    c, _ = resolve_args(["--dataset", "umls", "--model", "conve", "--output-dir",
                         str(tmp_path / "e")])
    assert c.run.preset is None  # presets configure DisenKGAT


def test_unknown_preset_is_an_error(tmp_path):
    from disenkg.cli.link import resolve_args
    from disenkg.errors import ConfigError

    with pytest.raises(ConfigError, match="--preset 'umsl': no such preset"):
        resolve_args(["--preset", "umsl", "--output-dir", str(tmp_path)])


def test_derived_values_are_logged_and_saved(tmp_path):
    from disenkg.cli.link import main as link_main
    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    out = tmp_path / "o"
    m = link_main(["--dataset", str(kg), "--output-dir", str(out), "--epochs", "1",
                   "--no-progress"])
    cfg = json.loads((out / "config.json").read_text())["args"]
    # 60 entities, 150 triples: batch floor, mid width
    assert (cfg["batch_size"], cfg["channels"], cfg["num_filters"]) == (32, 100, 32)
    assert cfg["preset"] is None and cfg["min_epochs"] == 0 and m["epochs_run"] == 1
    assert sum(p.numel() for p in __import__("disenkg").load_run(out).model.parameters()) \
        < 1_000_000


def test_min_epochs_delays_early_stopping(umls_path, tmp_path):
    from disenkg.datasets import KGDataset
    from disenkg.models import ConvE
    from disenkg.training import LinkTrainer, TrainConfig

    ds = KGDataset.load(umls_path)
    model = ConvE(num_entities=ds.num_entities, num_relations=ds.num_relations,
                  embedding_dim=20, k_h=5, k_w=4, num_filters=4)
    cfg = TrainConfig(epochs=6, batch_size=512, lr=1e-6, patience=1, min_epochs=4,
                      progress=False)
    out = LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=tmp_path).fit()
    assert out["epochs_run"] >= 5  # without min_epochs, patience 1 stops at epoch 2-3


def test_bn0_scale_fixed_freezes_the_input_scale(tmp_path):
    from disenkg.cli.link import main as link_main
    from tests.training.test_link import write_user_kg

    kg = write_user_kg(tmp_path)
    out = tmp_path / "o"
    link_main(["--dataset", str(kg), "--output-dir", str(out), "--epochs", "2",
               "--no-progress", "--bn0-scale", "fixed"])
    import disenkg

    bn0 = disenkg.load_run(out).model.scorer.interaction.bn0
    assert bn0.weight.detach().eq(1).all()
