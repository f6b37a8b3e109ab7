"""ChunkedAdam: torch.optim.Adam's update, bit for bit, without parameter-sized temporaries."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch

from disenkg.training.optim import ChunkedAdam


def params(dtype):
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(1000, 37, generator=g, dtype=dtype)),  # chunked
            torch.nn.Parameter(torch.randn(5, 3, generator=g, dtype=dtype)),  # too small
            torch.nn.Parameter(torch.randn(4099, generator=g, dtype=dtype))]  # chunked


def run(opt_params, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for s in range(steps):
        for i, p in enumerate(opt_params):
            # the last parameter has no gradient in step 1 (it is then skipped)
            p.grad = None if (i == 2 and s == 1) else torch.randn(
                p.shape, generator=g, dtype=p.dtype)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_bit_for_bit_torch_adam(dtype, weight_decay):
    mine, ref = params(dtype), params(dtype)
    opt = ChunkedAdam(mine, lr=0.003, weight_decay=weight_decay, chunk_elements=4096)
    ref_opt = torch.optim.Adam(ref, lr=0.003, weight_decay=weight_decay, foreach=False)
    run(mine, opt, 5, seed=1)
    run(ref, ref_opt, 5, seed=1)
    for a, b in zip(mine, ref):
        assert torch.equal(a, b)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[a][key], ref_opt.state[b][key]), key
    # the state is Adam's: a checkpoint of either continues in the other, to the bit
    swapped_mine = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    swapped_ref = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    to_torch = torch.optim.Adam(swapped_mine, lr=0.003, weight_decay=weight_decay)
    to_torch.load_state_dict(copy.deepcopy(opt.state_dict()))
    to_chunked = ChunkedAdam(swapped_ref, lr=0.003, weight_decay=weight_decay,
                             chunk_elements=4096)
    to_chunked.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    run(swapped_mine, to_torch, 3, seed=2)
    run(swapped_ref, to_chunked, 3, seed=2)
    for a, b in zip(swapped_mine, swapped_ref):
        assert torch.equal(a, b)


def test_options_it_does_not_chunk_fall_back_to_torch():
    mine, ref = params(torch.float64), params(torch.float64)
    opt = ChunkedAdam(mine, lr=0.01, chunk_elements=64)
    for group in opt.param_groups:
        group["amsgrad"] = True
    ref_opt = torch.optim.Adam(ref, lr=0.01, amsgrad=True, foreach=False)
    run(mine, opt, 3, seed=3)
    run(ref, ref_opt, 3, seed=3)
    for a, b in zip(mine, ref):
        assert torch.equal(a, b)
    assert "max_exp_avg_sq" in opt.state[mine[0]]
    with pytest.raises(ValueError, match="chunk_elements must be positive, got 0"):
        ChunkedAdam(mine, lr=0.01, chunk_elements=0)


def test_no_parameter_sized_temporaries():
    """The step's transient tensors stay within a few chunks, where torch.optim.Adam's
    reach twice the parameter."""
    p = torch.nn.Parameter(torch.zeros(1_000_000))
    p.grad = torch.ones_like(p)
    opt = ChunkedAdam([p], lr=0.01, chunk_elements=1 << 14)
    opt.step()  # the moments are allocated here
    assert 0 < _peak_new_bytes(opt.step) <= 2 * (1 << 14) * 4
    q = torch.nn.Parameter(torch.zeros(1_000_000))
    q.grad = torch.ones_like(q)
    ref = torch.optim.Adam([q], lr=0.01, foreach=False)
    ref.step()
    assert _peak_new_bytes(ref.step) >= 2 * q.numel() * 4


def _peak_new_bytes(fn) -> int:
    """Peak bytes held by tensors that ``fn`` allocates and has not freed yet: a dispatch
    mode counts each op output with a storage none of its inputs has, and a weakref
    finaliser takes it off when it dies."""
    from torch.utils._python_dispatch import TorchDispatchMode

    live = {"now": 0, "peak": 0}

    def gone(n: int) -> None:
        live["now"] -= n

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                inputs = {a.untyped_storage().data_ptr() for a in args
                          if isinstance(a, torch.Tensor)}
                storage = out.untyped_storage()
                if storage.nbytes() and storage.data_ptr() not in inputs:
                    live["now"] += storage.nbytes()
                    live["peak"] = max(live["peak"], live["now"])
                    weakref.finalize(out, gone, storage.nbytes())
            return out

    with Count():
        fn()
    return live["peak"]
