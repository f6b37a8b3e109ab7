"""The implementation plan: decided once per run, handed down, refusing what a component
cannot honour (issue 30)."""

from __future__ import annotations

import json

import pytest

from disenkg.api import resolve_config
from disenkg.cli.link import main as link_main
from disenkg.errors import ConfigError
from disenkg.ops import native
from disenkg.ops.precision import bf16_matmul_supported, fast_bf16_cpu
from disenkg.pipeline.plan import build_plan
from tests.conftest import kg_archive

SMALL = dict(preset="none", channels=20, k_h=5, k_w=4, num_filters=4, kernel_size=3,
             init_dim=8, epochs=2, batch_size=256, lr=0.01)


def plan(**kw):
    values = {**SMALL, **kw}
    if values.get("scorer", "interacte") not in ("interacte", "conve"):
        values = {k: v for k, v in values.items()
                  if k not in ("k_h", "k_w", "num_filters", "kernel_size")}
    if values.get("model") == "conve":
        values = {k: v for k, v in values.items() if k not in ("channels", "init_dim")}
    return build_plan(resolve_config(**values), "cpu")


def test_auto_on_this_cpu():
    p = plan()
    fast = fast_bf16_cpu() and bf16_matmul_supported()
    assert p.loss_impl == ("native" if native.available() else "chunked")
    assert p.loss_precision == ("bf16" if fast else "fp32")
    assert p.encoder_impl == ("native" if native.available() else "chunked")
    assert p.head_impl == "auto" and p.head_precision == ("bf16" if fast_bf16_cpu() else "fp32")
    assert plan(composition="sub").encoder_impl == "chunked"  # no fused schedule for sub
    assert plan(scorer="distmult").head_impl is None  # no conv head
    c = plan(model="conve", embed_dim=20)
    assert c.encoder_impl is None and c.head_impl == "auto"
    assert plan(loss_impl="chunked", loss_precision="fp32").loss_impl == "chunked"


def test_without_native_kernels_auto_falls_back_and_native_is_refused(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native, "unavailable_reason", lambda: "no C compiler 'cc' on PATH")
    p = plan()
    assert p.loss_impl == "chunked" and p.encoder_impl == "chunked"
    with pytest.raises(ConfigError, match="the mixture-BCE loss: loss_impl='native' but the "
                                          "native kernels are unavailable: no C compiler"):
        plan(loss_impl="native")
    with pytest.raises(ConfigError, match="the DisenConv encoder: encoder_impl='native'"):
        plan(encoder_impl="native")
    with pytest.raises(ConfigError, match="the conv head: head_impl='native'"):
        plan(head_impl="native")


@pytest.mark.parametrize("kw,message", [
    (dict(loss_impl="triton"), "the mixture-BCE loss: loss_impl='triton' needs a CUDA"),
    (dict(loss_impl="eager", loss_precision="bf16"),
     "the mixture-BCE loss: loss_precision='bf16' is implemented by the chunked"),
    (dict(scorer="transe_l1", loss_impl="native"),
     "loss_impl='native': the loss of this run does not go through the mixture-BCE op "
     "(scorer 'transe_l1'"),
    (dict(scorer="transe_l1", loss_precision="bf16"), "loss_precision='bf16': the loss"),
    (dict(loss="softmax", order="before", loss_impl="chunked"), "(the softmax loss)"),
    (dict(composition="sub", encoder_impl="native"),
     "the DisenConv encoder: encoder_impl='native' (the fused schedule) needs composition"),
    (dict(encoder_impl="triton"), "the DisenConv encoder: encoder_impl='triton' needs a CUDA"),
])
def test_what_a_component_cannot_honour_is_refused_naming_it(kw, message, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError) as e:
        plan(**kw)
    assert message in str(e.value)


def test_the_plan_is_recorded_and_runs_exactly_what_auto_ran(tmp_path):
    base = dict(SMALL, dataset=str(kg_archive("umls")), no_progress=True)
    argv = [x for k, v in base.items()
            for x in (["--" + k.replace("_", "-")] + ([] if v is True else [str(v)]))]
    auto = link_main([*argv, "--output-dir", str(tmp_path / "auto")])
    p = json.loads((tmp_path / "auto" / "config.json").read_text())["plan"]
    assert p["loss_impl"] in ("native", "chunked") and p["device"] == "cpu"
    given = link_main([*argv, "--output-dir", str(tmp_path / "given"),
                       "--loss-impl", p["loss_impl"], "--loss-precision", p["loss_precision"],
                       "--encoder-impl", p["encoder_impl"], "--head-impl", p["head_impl"],
                       "--head-precision", p["head_precision"]])
    for key in ("valid", "test", "best_epoch"):
        assert auto[key] == given[key]
