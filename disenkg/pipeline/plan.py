"""The implementation plan of a run: which implementation and precision each component
runs, decided once from the configuration and the device.

Each component's rule stays with its op (``resolve_impl`` of :mod:`disenkg.ops.mixture_bce`
and :mod:`disenkg.ops.conv_head`, :func:`~disenkg.ops.precision.use_bf16`, the fused
schedule's conditions of :class:`~disenkg.nn.conv.DisenConv`); the plan applies them once,
for the run's device and float32 parameters, checks that every *requested* implementation
or precision can be honoured by the component it names (else :class:`ConfigError` naming
the component), and hands the resolved words down: the trainer's loss and the model's
encoder and head are built with them, and ``config.json`` records them under ``plan``.

=================  ===================================================================
component          settings, and what ``auto`` becomes
=================  ===================================================================
loss               ``loss_impl``, ``loss_precision``: ``triton`` on CUDA (bf16 GEMM
                   inputs where supported), else the chunked schedule with the C tile
                   (``native``) where the kernels load and K <= 16, else ``chunked``;
                   bf16 on CPUs that multiply bf16 measurably faster than fp32
                   (the capability probe, :mod:`disenkg.ops.probe`; recorded as
                   ``cpu_probe``)
conv head          ``head_impl``, ``head_precision``: ``eager`` (cuDNN) on CUDA, else
                   ``auto`` (the chunked head, its C patch kernels where they apply);
                   bf16 where the probe says it pays
encoder            ``encoder_impl``: the fused schedule (``native`` on CPUs, ``triton`` on
                   CUDA) for mult / cross compositions with dot_weight / dot_emb
                   attention, else ``chunked``
=================  ===================================================================

A component the run does not use takes no setting: ``loss_impl`` / ``loss_precision``
other than ``auto`` are refused for the softmax loss and for a scorer that is not a dot
product (TransE-L1 scores its logits directly).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from disenkg.errors import ConfigError
from disenkg.nn.composition import RELATION_FACTORS
from disenkg.ops import native
from disenkg.ops.conv_head.api import compute_dtype
from disenkg.ops.conv_head.api import resolve_impl as head_rule
from disenkg.ops.mixture_bce.api import resolve_impl as loss_rule
from disenkg.ops.mixture_bce.chunked import NATIVE_MAX_K
from disenkg.ops.precision import triton_bf16, use_bf16
from disenkg.ops.probe import bf16_pays, probe

__all__ = ["ImplPlan", "build_plan"]

logger = logging.getLogger(__name__)

#: the compositions the fused encoder schedule takes (a relation factor)
FUSED_COMPOSITIONS = tuple(RELATION_FACTORS)


@dataclass(frozen=True)
class ImplPlan:
    """The resolved implementation and precision of each component (``None``: the run has
    no such component). Words as in :data:`disenkg.ops.impls.OP_IMPLS`."""

    device: str
    loss_impl: str | None
    loss_precision: str | None
    head_impl: str | None
    head_precision: str | None
    encoder_impl: str | None
    #: on a CPU, the capability probe behind ``auto`` precision (:mod:`disenkg.ops.probe`)
    cpu_probe: str | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"loss {self.loss_impl}/{self.loss_precision}" if self.loss_impl
                 else "loss: not the mixture-BCE op"]
        if self.head_impl:
            parts.append(f"conv head {self.head_impl}/{self.head_precision}")
        if self.encoder_impl:
            parts.append(f"encoder {self.encoder_impl}")
        probe = f" (this CPU: {self.cpu_probe})" if self.cpu_probe else ""
        return f"implementations on {self.device}: " + ", ".join(parts) + probe


def _triton_ok(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _loss(config: Any, device: torch.device, x: torch.Tensor) -> tuple[str | None, str | None]:
    t, m = config.training, config.model
    scorer = getattr(m, "scorer", None)
    why = None
    if t.loss != "bce":
        why = f"the {t.loss} loss"
    elif scorer is not None:
        from disenkg.nn.scorers import SCORERS

        if not getattr(SCORERS.get(scorer), "dot_product", True):
            why = f"scorer {scorer!r} (not a dot product: it scores its logits directly)"
    if why is not None:
        for key in ("loss_impl", "loss_precision"):
            if getattr(t, key) != "auto":
                raise ConfigError(f"{key}={getattr(t, key)!r}: the loss of this run does not "
                                  f"go through the mixture-BCE op ({why}); leave it 'auto'")
        return None, None
    impl, precision = t.loss_impl, t.loss_precision
    where = "the mixture-BCE loss"
    if impl == "triton" and not _triton_ok(device):
        raise ConfigError(f"{where}: loss_impl='triton' needs a CUDA device and the triton "
                          f"package (this run is on {device})")
    if impl == "native":
        _need_native(where, "loss_impl", device)
    if precision == "bf16" and impl == "eager":
        raise ConfigError(f"{where}: loss_precision='bf16' is implemented by the chunked "
                          "schedule and the Triton kernels, not by loss_impl='eager'")
    backend, tile = loss_rule(impl, device, x.dtype)
    if backend == "triton":
        return "triton", "bf16" if triton_bf16(precision, x) else "fp32"
    if backend == "eager":
        return "eager", "fp32"
    k = getattr(m, "num_components", 1)
    if tile == "native" or (tile == "auto" and device.type == "cpu" and k <= NATIVE_MAX_K
                            and native.available()):
        word = "native"
    else:
        word = "chunked"
    try:
        bf16 = use_bf16(precision, x)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return word, "bf16" if bf16 else "fp32"


def _need_native(where: str, key: str, device: torch.device) -> None:
    if device.type != "cpu":
        raise ConfigError(f"{where}: {key}='native' runs on CPUs (this run is on {device})")
    if not native.available():
        raise ConfigError(f"{where}: {key}='native' but the native kernels are unavailable: "
                          f"{native.unavailable_reason()}")


def _head(config: Any, device: torch.device, x: torch.Tensor) -> tuple[str | None, str | None]:
    m = config.model
    if not m.is_conv():
        return None, None
    where = "the conv head"
    if m.head_impl == "native":
        _need_native(where, "head_impl", device)
    impl = head_rule(m.head_impl, x)
    low = compute_dtype(m.head_precision, x, impl)
    return impl, "bf16" if low == torch.bfloat16 else "fp32"


def _encoder(config: Any, device: torch.device) -> str | None:
    m = config.model
    if getattr(m, "num_layers", 0) < 1:
        return None
    from disenkg.nn.conv.disen_conv import FUSED_ATTENTIONS  # PyG: a DisenKGAT run only

    impl = m.encoder_impl
    where = "the DisenConv encoder"
    fusable = m.composition in FUSED_COMPOSITIONS and m.edge_attention in FUSED_ATTENTIONS
    if impl in ("native", "triton") and not fusable:
        raise ConfigError(f"{where}: encoder_impl={impl!r} (the fused schedule) needs "
                          f"composition in {list(FUSED_COMPOSITIONS)} and edge_attention in "
                          f"{list(FUSED_ATTENTIONS)}, got {m.composition!r} and "
                          f"{m.edge_attention!r}")
    if impl == "native":
        _need_native(where, "encoder_impl", device)
    if impl == "triton" and not _triton_ok(device):
        raise ConfigError(f"{where}: encoder_impl='triton' needs a CUDA device and the triton "
                          f"package (this run is on {device})")
    if impl != "auto":
        return impl
    if fusable and device.type == "cpu" and native.available():
        return "native"
    if fusable and device.type == "cuda" and _triton_ok(device):
        return "triton"
    return "chunked"


def build_plan(config: Any, device: torch.device | str) -> ImplPlan:
    """The plan of a resolved :class:`~disenkg.pipeline.LinkConfig` on ``device``.

    Raises:
        ConfigError: a requested implementation or precision that its component cannot
            honour here, naming the component.
    """
    device = torch.device(device)
    x = torch.empty(1, device=device)  # the run's parameters: float32 on its device
    loss_impl, loss_precision = _loss(config, device, x)
    head_impl, head_precision = _head(config, device, x)
    return ImplPlan(device=str(device), loss_impl=loss_impl, loss_precision=loss_precision,
                    head_impl=head_impl, head_precision=head_precision,
                    encoder_impl=_encoder(config, device), cpu_probe=_cpu_probe(device))


def _cpu_probe(device: torch.device) -> str | None:
    """What the capability probe measured on this CPU (``None`` off a CPU or probe off)."""
    if device.type != "cpu":
        return None
    result = probe()
    if result is None:
        return None
    return f"{result.key}; {result.describe()}; auto precision " + \
        ("bf16" if bf16_pays(result) else "fp32")
