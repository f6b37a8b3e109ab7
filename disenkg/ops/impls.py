"""One vocabulary for implementation choices: every ``impl=`` argument and ``--*-impl``
flag of the package takes a subset of these words, each with one meaning everywhere.

============  ==========================================================================
``impl``      meaning
============  ==========================================================================
``auto``      the fastest choice that computes in the inputs' precision on their device
``eager``     plain PyTorch ops that materialise the op's large intermediate (the
              ``(B, K, N)`` logits, the ``(E, K, F)`` messages, all feature maps): the
              readable definition, used as the reference in tests
``chunked``   PyTorch ops over chunks, intermediates recomputed in backward: bounded
              memory with nothing but PyTorch
``native``    the package's C/OpenMP kernels (:mod:`disenkg.ops.native`; CPU): bounded
              memory and the fastest CPU path; an error where they cannot run
``triton``    the Triton kernels (CUDA GPUs)
============  ==========================================================================

Which op takes which words: :data:`OP_IMPLS`. The element kernels below the ops (patches,
edge products, the loss tile) take ``auto`` / ``native`` / ``eager``.
"""

from __future__ import annotations

__all__ = ["IMPL_MEANINGS", "KERNEL_IMPLS", "OP_IMPLS", "check_impl"]

#: every word, with its one meaning
IMPL_MEANINGS: dict[str, str] = {
    "auto": "the fastest choice computing in the inputs' precision on their device",
    "eager": "plain PyTorch, materialising the op's large intermediate (the reference)",
    "chunked": "PyTorch ops over chunks, recomputed in backward (bounded memory)",
    "native": "the package's C/OpenMP CPU kernels (bounded memory, fastest on CPUs)",
    "triton": "Triton kernels (CUDA GPUs)",
}

#: the words each op accepts (its command-line flag in brackets)
OP_IMPLS: dict[str, tuple[str, ...]] = {
    "mixture_bce": ("auto", "eager", "chunked", "native", "triton"),  # --loss-impl
    "disen_conv": ("auto", "eager", "chunked", "native", "triton"),  # --encoder-impl
    "conv_head": ("auto", "eager", "chunked", "native"),  # --head-impl
}

#: the element kernels' words (patches, edge products, the loss tile)
KERNEL_IMPLS: tuple[str, ...] = ("auto", "native", "eager")


def check_impl(impl: str, allowed: tuple[str, ...], *, name: str = "impl") -> str:
    """``impl`` if it is one of ``allowed``, else ``ValueError`` listing them."""
    if impl not in allowed:
        raise ValueError(f"unknown {name} {impl!r}; choose one of {list(allowed)}")
    return impl
