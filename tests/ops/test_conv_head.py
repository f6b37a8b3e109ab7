"""The conv head op (:mod:`disenkg.ops.conv_head`): the chunked head equals the plain modules
(values, gradients, running stats), its Functions against written-out references."""

from __future__ import annotations

import copy

import pytest
import torch

from disenkg.nn.scorers import ConvEInteraction, InteractEInteraction
from disenkg.ops import native

#: cache tiles of the chunked head (patch rows, fc gradient columns): the defaults (one tile
#: per chunk at these sizes), one image and one column at a time, and ragged tiles (13 rows:
#: two 6-position images, or one larger image; slices of 7 columns)
TILINGS = {"default": None, "single": (1, 1), "ragged": (13, 7)}


def use_tiling(monkeypatch, name: str) -> None:
    from disenkg.ops.conv_head import buffers

    if TILINGS[name] is not None:
        monkeypatch.setattr(buffers, "TILE_ROWS", TILINGS[name][0])
        monkeypatch.setattr(buffers, "FC_COLUMN_TILE", TILINGS[name][1])


@pytest.mark.parametrize("impl", ["chunked", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="native kernels unavailable"))])
@pytest.mark.parametrize("cls", ["conve", "interacte"])
@pytest.mark.parametrize("tiling", list(TILINGS))
def test_chunked_equals_plain(monkeypatch, cls, impl, tiling):
    """``impl="chunked"`` (PyTorch patch kernels) and ``"native"`` (C kernels) against the
    plain modules (``"eager"``), in whole chunks and in cache tiles."""
    use_tiling(monkeypatch, tiling)
    torch.manual_seed(0)
    if cls == "conve":
        plain = ConvEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                                 input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0,
                                 impl="eager")
    else:
        plain = InteractEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                                     num_perm=2, feature_dropout=0.0, hidden_dropout=0.0,
                                     impl="eager")
    plain = plain.double()
    chunked = copy.deepcopy(plain)
    chunked.image_chunk, chunked.impl = 7, impl  # 23 images -> chunks of 7, 7, 7, 2
    g = torch.Generator().manual_seed(1)
    h = torch.randn(23, 12, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(23, 12, generator=g, dtype=torch.float64, requires_grad=True)
    a, b = plain(h, r), chunked(h, r)
    torch.testing.assert_close(b, a)
    w = torch.randn_like(a)
    pa = [h, r] + list(plain.parameters())
    pb = [h, r] + list(chunked.parameters())
    grads_a = torch.autograd.grad((a * w).sum(), pa)
    grads_b = torch.autograd.grad((b * w).sum(), pb)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(chunked.bn1, name), getattr(plain.bn1, name))
    plain.eval()
    chunked.eval()
    torch.testing.assert_close(chunked(h, r), plain(h, r))  # with grad: the plain path
    with torch.no_grad():  # the chunked GEMM path
        torch.testing.assert_close(chunked(h, r), plain(h, r))


@pytest.mark.parametrize("use_store", [False, True])
@pytest.mark.parametrize("fc_chunks", [1, 2])
@pytest.mark.parametrize("impl", ["native", "eager"])
@pytest.mark.parametrize("groups,with_bias", [(1, True), (2, False)])
@pytest.mark.parametrize("tiling", ["default", "ragged"])
def test_head_gradcheck_with_dropout_mask(monkeypatch, groups, with_bias, impl, fc_chunks,
                                          use_store, tiling):
    """The head (with patches rebuilt per tile, or from a :class:`PatchStore`) against
    conv -> BN -> ReLU -> mask -> fc written out, values and gradients (float64)."""
    from disenkg.ops.conv_head import ConvHeadFunction, HeadPlan, buffers
    from disenkg.ops.conv_head.buffers import PatchStore

    monkeypatch.setattr(buffers, "FC_CHUNKS", fc_chunks)
    use_tiling(monkeypatch, tiling)

    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)

    C, k, n = 3, 2, 3
    x = r(n, groups, 4, 3)
    w = r(C, 1, k, k)
    b = r(C) if with_bias else None
    L = 3 * 2
    mean, var = r(groups * C), (torch.rand(groups * C, generator=g, dtype=torch.float64) + 0.5)
    var.requires_grad_()
    gamma, beta = r(groups * C), r(groups * C)
    fc_w, fc_b = r(5, groups * C * L), r(5)
    keep = torch.rand(groups, n, C, generator=g) > 0.3
    mask = keep.double() / 0.7  # Dropout2d(p=0.3)

    store = PatchStore(x.detach(), k, impl) if use_store else None

    def fn(x, w, mean, var, gamma, beta, fc_w, fc_b, *bb):
        # chunks of 2 images: 2 + 1
        plan = HeadPlan(kernel_size=k, groups=groups, eps=1e-5, chunk=2, impl=impl,
                        fc_compute=fc_w.detach() / 0.7, keep=keep, drop_scale=1 / 0.7,
                        store=store)
        return ConvHeadFunction.apply(x, w, bb[0] if bb else None, mean, var, gamma, beta,
                                      fc_w, fc_b, plan)

    def plain(x, w, mean, var, gamma, beta, fc_w, fc_b, *bb):
        """conv -> BN with the given statistics -> ReLU -> dropout mask -> fc."""
        y = torch.nn.functional.conv2d(x, w.repeat(groups, 1, 1, 1), bb[0] if bb else None,
                                       groups=groups)
        z = (y - mean.view(1, -1, 1, 1)) * torch.rsqrt(var + 1e-5).view(1, -1, 1, 1)
        a = torch.relu(z * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1))
        a = a * mask.transpose(0, 1).reshape(n, groups * C, 1, 1)
        # fc columns in (G, L, C) order
        return a.view(n, groups, C, L).transpose(2, 3).reshape(n, -1) @ fc_w.t() + fc_b

    args = (x, w, mean, var, gamma, beta, fc_w, fc_b) + ((b,) if b is not None else ())
    out = fn(*args)
    ref = plain(*args)
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for u, v in zip(torch.autograd.grad((out * up).sum(), args),
                    torch.autograd.grad((ref * up).sum(), args)):
        torch.testing.assert_close(u, v)
    if not use_store:  # a store caches the patches of this x, so finite differences in x
        assert torch.autograd.gradcheck(fn, args)  # cannot go through it


@pytest.mark.parametrize("cls", ["conve", "interacte"])
def test_bf16_head_close_to_fp32(cls):
    """bfloat16 GEMMs / feature maps: outputs and gradients within bf16 tolerance of fp32,
    batch-norm running statistics identical (they come from fp32 moments)."""
    torch.manual_seed(0)
    if cls == "conve":
        a = ConvEInteraction(embedding_dim=200, num_filters=32, kernel_size=3,
                             input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0,
                             image_chunk=16)
    else:
        a = InteractEInteraction(embedding_dim=200, num_filters=24, kernel_size=9, num_perm=2,
                                 feature_dropout=0.0, hidden_dropout=0.0, image_chunk=16)
    b = copy.deepcopy(a)
    b.precision = "bf16"
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, 200, generator=g, requires_grad=True)
    r = torch.randn(40, 200, generator=g)
    oa, ob = a(h, r), b(h, r)
    assert ob.dtype == torch.float32
    torch.testing.assert_close(ob, oa, atol=0.05, rtol=0.05)
    w = torch.randn_like(oa)
    # Excluded: parameters followed by a batch norm that removes their effect (bn0 before
    # bn1, the conv and fc biases before bn1 / bn2), whose exact gradient is ~0, so only
    # rounding noise would be compared.
    cancel = ("bn0.weight", "bn0.bias", "conv.bias", "fc.bias")
    pa = [h] + [p for n, p in a.named_parameters() if n not in cancel]
    pb = [h] + [p for n, p in b.named_parameters() if n not in cancel]
    ga = torch.autograd.grad((oa * w).sum(), pa)
    gb = torch.autograd.grad((ob * w).sum(), pb)
    for u, v in zip(ga, gb):
        assert v.dtype == u.dtype
        # bf16 rounding of the fc output, amplified by bn2's centring
        assert (u - v).norm() <= 0.1 * u.norm(), ((u - v).norm(), u.norm())
    torch.testing.assert_close(b.bn1.running_mean, a.bn1.running_mean)
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b(h, r), a(h, r), atol=0.05, rtol=0.05)
    # evaluation mode with gradients: the plain modules under bfloat16 autocast
    torch.testing.assert_close(b(h, r), a(h, r), atol=0.05, rtol=0.05)


def test_eager_bf16_runs_under_autocast():
    """``impl="eager"`` with bfloat16 (the GPU policy): the plain modules under autocast,
    float32 output, parameters and gradients, within bfloat16 rounding of float32."""
    torch.manual_seed(0)
    m = InteractEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                             feature_dropout=0.0, hidden_dropout=0.0, impl="eager")
    ref = copy.deepcopy(m)
    m.precision = "bf16"
    h, r = torch.randn(7, 12, requires_grad=True), torch.randn(7, 12)
    out, want = m(h, r), ref(h, r)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, atol=0.05, rtol=0.05)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * w).sum().backward()  # (a plain sum would cancel in the batch norms)
    assert m.filters.grad.dtype == torch.float32
    g_ref = torch.autograd.grad((want * w).sum(), ref.filters)[0]
    assert (m.filters.grad - g_ref).norm() <= 0.1 * g_ref.norm()
    m.precision = "fp16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        m(torch.randn(3, 12), torch.randn(3, 12))


@pytest.mark.parametrize("impl", ["native", "eager"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("tiling", ["default", "single"])
def test_moments_gradcheck(monkeypatch, groups, impl, tiling):
    from disenkg.ops.conv_head import PatchMoments

    use_tiling(monkeypatch, tiling)
    x = torch.randn(3, groups, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: PatchMoments.apply(x, 2, groups, impl, x.dtype), (x,))


@pytest.mark.parametrize("impl", ["native", "eager"])
@pytest.mark.parametrize("tiling", ["default", "single"])
def test_moments_backward_from_a_patch_store_is_identical(monkeypatch, impl, tiling):
    """The moments' backward reading a :class:`PatchStore` gives bit-identical gradients
    to rebuilding the patches (float64 and bfloat16 patches)."""
    from disenkg.ops.conv_head import PatchMoments
    from disenkg.ops.conv_head.buffers import PatchStore

    use_tiling(monkeypatch, tiling)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 2, 9, 8, generator=g)
    dgram = torch.randn(2, 10, 10, generator=g)
    for dtype, low in ((torch.float64, torch.float64), (torch.float32, torch.bfloat16)):
        grads = []
        for store in (None, PatchStore(x.to(low), 3, impl)):
            xi = x.to(dtype).requires_grad_()
            out = PatchMoments.apply(xi, 3, 2, impl, low, store)
            grads.append(torch.autograd.grad((out * dgram.to(dtype)).sum(), xi)[0])
        assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("impl", ["native", "eager"])
def test_moments_bf16_backward_close_to_float64(impl):
    """With ``low = bfloat16`` the Gram matrix stays float32 (within the rounding of its
    inputs to bfloat16, which oneDNN may apply) and the input gradient is within bfloat16
    rounding of the float64 one."""
    from disenkg.ops.conv_head import PatchMoments

    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 2, 9, 8, generator=g)
    dgram = torch.randn(2, 10, 10, generator=g)
    x64 = x.double().requires_grad_()
    ref = PatchMoments.apply(x64, 3, 2, impl, torch.float64)
    (g_ref,) = torch.autograd.grad((ref * dgram.double()).sum(), x64)
    x32 = x.clone().requires_grad_()
    out = PatchMoments.apply(x32, 3, 2, impl, torch.bfloat16)
    assert out.dtype == torch.float32
    assert (out.double() - ref).norm() <= 2**-8 * ref.norm()
    (g_low,) = torch.autograd.grad((out * dgram).sum(), x32)
    assert g_low.dtype == torch.float32
    err = (g_low.double() - g_ref).norm() / g_ref.norm()
    assert 0 < err < 1e-2, err  # rounded (not exact), but only by bfloat16's 2^-9


@pytest.mark.parametrize("groups", [1, 2])
def test_moments_equal_patch_statistics(groups):
    """The Gram matrix of the augmented patches holds the count, patch sums and second
    moments, computed here from ``F.unfold``."""
    from disenkg.ops.conv_head import PatchMoments

    x = torch.randn(5, groups, 6, 7, dtype=torch.float64)
    gram = PatchMoments.apply(x, 3, groups, "auto", x.dtype)
    for grp in range(groups):
        cols = torch.nn.functional.unfold(x[:, grp:grp + 1], 3).transpose(1, 2).reshape(-1, 9)
        assert gram[grp, 9, 9] == cols.shape[0]
        torch.testing.assert_close(gram[grp, :9, 9], cols.sum(0))
        torch.testing.assert_close(gram[grp, :9, :9], cols.t() @ cols)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_follows_the_hardware(monkeypatch, fast):
    """``auto`` is bf16 exactly when the CPU has bf16 matrix hardware, float32 inputs and
    the chunked path; float64 stays float64 and ``impl="eager"`` stays plain."""
    from disenkg.ops import conv_head, precision

    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: fast)
    x32 = torch.randn(2, 3)
    for impl in ("auto", "chunked", "native"):
        assert conv_head.compute_dtype("auto", x32, impl) == (torch.bfloat16 if fast
                                                              else torch.float32)
    assert conv_head.compute_dtype("auto", x32, "eager") == torch.float32
    assert conv_head.compute_dtype("auto", x32.double(), "auto") == torch.float64
    torch.manual_seed(0)
    a = InteractEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                             image_chunk=4, precision="auto")
    b = copy.deepcopy(a)
    b.precision = "bf16" if fast else "fp32"
    h, r = torch.randn(9, 12), torch.randn(9, 12)
    torch.manual_seed(1)
    oa = a(h, r)
    torch.manual_seed(1)
    torch.testing.assert_close(oa, b(h, r), rtol=0, atol=0)
    a.eval()
    with torch.no_grad():
        a(h, r)
    a(h, r)  # evaluation mode with gradients: the plain float32 path, no error


def test_eval_fc_copy_follows_weight_updates():
    """The evaluation head caches its reordered fc weight; an in-place update (optimiser
    step, load_state_dict) must invalidate it."""
    torch.manual_seed(0)
    plain = InteractEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                                 impl="eager").eval()
    chunked = copy.deepcopy(plain)
    chunked.image_chunk, chunked.impl = 4, "auto"
    h, r = torch.randn(9, 12), torch.randn(9, 12)
    with torch.no_grad():
        torch.testing.assert_close(chunked(h, r), plain(h, r))
        for m in (plain, chunked):
            m.fc.weight.mul_(-2.0)
        torch.testing.assert_close(chunked(h, r), plain(h, r))
        chunked.load_state_dict(copy.deepcopy(plain).state_dict())
        torch.testing.assert_close(chunked(h, r), plain(h, r))


@pytest.mark.parametrize("groups,with_bias", [(1, True), (1, False), (3, False)])
def test_batch_statistics_equal_conv_output_moments(groups, with_bias):
    """Mean and biased variance per (group, channel) read off the patch Gram matrices equal
    those of the materialised convolution output (float64)."""
    from disenkg.ops.conv_head import PatchMoments, batch_statistics

    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, groups, 7, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64) if with_bias else None
    y = torch.nn.functional.conv2d(x, w.repeat(groups, 1, 1, 1), b, groups=groups)
    gram = PatchMoments.apply(x, 3, groups, "auto", x.dtype)
    mean, var = batch_statistics(gram, w, b, 6 * 5 * 3)
    torch.testing.assert_close(mean, y.mean((0, 2, 3)))
    torch.testing.assert_close(var, y.var((0, 2, 3), unbiased=False))


@pytest.mark.parametrize("impl", ["chunked", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="native kernels unavailable"))])
@pytest.mark.parametrize("k_h,k_w,kernel", [(4, 3, 3), (5, 2, 2), (3, 4, 1), (6, 5, 4)])
@pytest.mark.parametrize("tiling", ["default", "ragged"])
def test_banded_evaluation_equals_the_whole_image(monkeypatch, impl, k_h, k_w, kernel, tiling):
    """ConvE's evaluation split (head band + mixed band + per-relation relation band)
    against the plain modules on the stacked image, float64, trained-looking batch norm."""
    use_tiling(monkeypatch, tiling)
    torch.manual_seed(0)
    D = k_h * k_w
    plain = ConvEInteraction(embedding_dim=D, k_h=k_h, k_w=k_w, num_filters=5,
                             kernel_size=kernel, impl="eager").double()
    for bn in (plain.bn0, plain.bn1, plain.bn2):  # running statistics away from 0 / 1
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    banded = copy.deepcopy(plain)
    banded.image_chunk, banded.impl = 7, impl
    plain.eval()
    banded.eval()
    g = torch.Generator().manual_seed(1)
    table = torch.randn(6, D, generator=g, dtype=torch.float64)  # 6 relations
    h = torch.randn(23, D, generator=g, dtype=torch.float64)
    rels = torch.randint(0, 6, (23,), generator=g)
    with torch.no_grad():
        part = banded.relation_part(table)
        assert part is not None and part.shape == (6, D)
        got = banded(h, table[rels], relation_part=part[rels])
        want = plain(h, table[rels])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # no split in training mode, with gradients, or on the plain path
    assert plain.relation_part(table) is None
    banded.train()
    assert banded.relation_part(table) is None
    banded.eval()
    assert banded.relation_part(table.requires_grad_()) is None


def test_conve_evaluation_uses_the_relation_part():
    from disenkg.models import ConvE

    torch.manual_seed(0)
    m = ConvE(num_entities=30, num_relations=4, embedding_dim=20, k_h=5, k_w=4,
              num_filters=3, head_impl="chunked").double().eval()
    h, r = torch.arange(30) % 30, torch.arange(30) % 8
    with torch.no_grad():
        reps = m.encode()
        assert reps.relation_part is not None and reps.relation_part.shape == (8, 20)
        banded = m.score(reps, h, r)
        whole = m.score(type(reps)(reps.entity, reps.relation), h, r)
    torch.testing.assert_close(banded, whole, rtol=1e-10, atol=1e-10)
    m.train()
    assert m.encode().relation_part is None


def test_no_bands_for_a_bfloat16_head():
    m = ConvEInteraction(embedding_dim=12, k_h=4, k_w=3, num_filters=5, kernel_size=3,
                         impl="chunked", precision="bf16").eval()
    with torch.no_grad():
        assert m.relation_part(torch.randn(3, 12)) is None


@pytest.mark.parametrize("tiling", ["default", "single", "ragged"])
def test_tiles_and_column_slices_against_plain_references(monkeypatch, tiling):
    """``tiles`` covers every image once, in order, within the tile size; ``column_mm``
    equals one product (and one accumulated product) for odd widths; ``positions`` is the
    number of patch rows ``patches`` makes per image."""
    from disenkg.ops.conv_head.buffers import column_mm, tile_images, tiles
    from disenkg.ops.patches import patches, positions

    use_tiling(monkeypatch, tiling)
    for n, L in ((23, 6), (1, 400), (5, 13), (0, 7)):
        got = tiles(n, L, torch.float32)
        assert [i for s, e in got for i in range(s, e)] == list(range(n))
        assert all(0 < e - s <= tile_images(L, torch.float32) for s, e in got)
    g = torch.Generator().manual_seed(0)
    for m, k, w in ((3, 5, 1), (4, 7, 13), (2, 3, 2050)):
        a = torch.randn(m, k, generator=g, dtype=torch.float64)
        b = torch.randn(k, w, generator=g, dtype=torch.float64)
        out = torch.full((m, w), float("nan"), dtype=torch.float64)
        torch.testing.assert_close(column_mm(a, b, out), a @ b)
        acc = torch.randn(m, w, generator=g, dtype=torch.float64)
        want = acc + a @ b
        torch.testing.assert_close(column_mm(a, b, acc, accumulate=True), want)
    x = torch.randn(2, 9, 7)
    assert positions(x, 3) * 2 == patches(x, 3).shape[0] == 2 * 7 * 5


@pytest.mark.parametrize("m", [0, 1, 7, 8, 400])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_add_tn_against_float64(m, dtype):
    """acc += a^T b in two halves of the rows (odd m: one product) equals the float64
    product up to the inputs' precision; acc keeps its values and dtype."""
    from disenkg.ops.conv_head.buffers import add_tn_

    g = torch.Generator().manual_seed(m)
    a = torch.randn(m, 5, generator=g).to(dtype)
    b = torch.randn(m, 3, generator=g).to(dtype)
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    acc = torch.randn(5, 3, generator=g, dtype=acc_dtype)
    want = acc.double() + a.double().t() @ b.double()
    out = add_tn_(acc, a, b)
    assert out is acc and acc.dtype == acc_dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(acc.double(), want, rtol=tol, atol=tol * max(m, 1) ** 0.5)
