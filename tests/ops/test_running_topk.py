"""The running top-k (issue 32): equal to a stable descending sort of the whole row, for
both kernels, any tiling, ties, -inf, NaN and k beyond the row."""

from __future__ import annotations

import math

import pytest
import torch

from disenkg.ops import native
from disenkg.ops.running_topk import RunningTopK

IMPLS = ["eager", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="native kernels unavailable"))]


def reference(x: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Per row, the first k (column, value) of a stable descending sort, -inf / NaN out."""
    out = []
    for row in x.tolist():
        ok = [(c, v) for c, v in enumerate(row) if not math.isnan(v) and v != -math.inf]
        out.append(sorted(ok, key=lambda cv: -cv[1])[:k])  # sorted() is stable
    return out


def run_tiles(x: torch.Tensor, k: int, widths: list[int], impl: str):
    top = RunningTopK(rows=x.shape[0], k=k, dtype=x.dtype, impl=impl)
    lo = 0
    for w in widths:
        top.update(x[:, lo:lo + w], lo)
        lo += w
    row, col, rank, val = top.result()
    got = [[] for _ in range(x.shape[0])]
    for r, c, rk, v in zip(row.tolist(), col.tolist(), rank.tolist(), val.tolist()):
        assert rk == len(got[r])  # ranks 0.. in order within the row
        got[r].append((c, v))
    return got


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", range(12))
def test_equals_a_stable_sort_of_the_whole_row(impl, seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 9, (1,), generator=g))
    N = int(torch.randint(1, 150, (1,), generator=g))
    k = int(torch.randint(1, 20, (1,), generator=g))
    x = torch.randint(0, 6, (B, N), generator=g).float()  # many ties
    x[x == 5] = -math.inf
    if seed % 3 == 0:
        x[0, ::7] = math.nan
    if seed % 4 == 1:
        x = torch.randn(B, N, generator=g)
    cuts, lo = [], 0
    while lo < N:  # odd tile widths, some wider than a 32-column block
        w = int(torch.randint(1, 70, (1,), generator=g))
        cuts.append(min(w, N - lo))
        lo += cuts[-1]
    assert run_tiles(x, k, cuts, impl) == reference(x, k)


@pytest.mark.parametrize("impl", IMPLS)
def test_strided_tiles_and_a_wide_row(impl):
    g = torch.Generator().manual_seed(0)
    full = torch.randn(5, 3000, generator=g).round(decimals=1)  # ties across tiles
    got = run_tiles(full, 10, [512] * 5 + [440], impl)  # views of a (5, 3000) tensor
    assert got == reference(full, 10)


def test_native_and_eager_agree_on_large_random_input():
    if not native.available():
        pytest.skip("native kernels unavailable")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 2000, generator=g)
    a = run_tiles(x, 25, [512, 512, 512, 464], "native")
    b = run_tiles(x, 25, [512, 512, 512, 464], "eager")
    assert a == b


def test_float64_rows_take_the_eager_path():
    x = torch.randn(3, 40, dtype=torch.float64)
    assert run_tiles(x, 4, [40], "auto") == reference(x, 4)
    with pytest.raises(ValueError, match="float32"):
        RunningTopK(rows=3, k=4, dtype=torch.float64, impl="native")


def test_bad_use_is_named():
    top = RunningTopK(rows=2, k=3, impl="eager")
    top.update(torch.zeros(2, 5), 0)
    with pytest.raises(ValueError, match="ascending column order"):
        top.update(torch.zeros(2, 5), 2)
    with pytest.raises(ValueError, match="3 rows, expected 2"):
        top.update(torch.zeros(3, 5), 10)
    with pytest.raises(ValueError, match="k must be"):
        RunningTopK(rows=2, k=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_signed_zeros_tie_and_infinity_ranks_first(impl):
    x = torch.tensor([[0.0, -0.0, 1.0, math.inf, -1.0, 0.0, -math.inf, math.nan, -0.0]])
    assert run_tiles(x, 9, [4, 5], impl) == reference(x, 9)
    assert [c for c, _ in run_tiles(x, 9, [4, 5], impl)[0]] == [3, 2, 0, 1, 5, 8, 4]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_narrow_floats_take_the_key_path(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 300, generator=g).round(decimals=1).to(dtype)
    top = RunningTopK(rows=4, k=7, dtype=dtype, impl="eager")
    assert top._keys is not None
    got = run_tiles(x, 7, [100, 100, 100], "eager")
    assert got == reference(x.float(), 7)
