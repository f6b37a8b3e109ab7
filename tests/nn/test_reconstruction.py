"""The VGAE's exact all-pairs reconstruction loss through mixture_bce against a dense N x N
reference built from the logits (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from disenkg.nn.reconstruction import full_reconstruction_loss, reconstruction_targets


def dense_reference(z, edge_index):
    N = z.shape[0]
    A = torch.zeros(N, N, dtype=z.dtype)
    A[edge_index[0], edge_index[1]] = 1
    A[edge_index[1], edge_index[0]] = 1
    A += torch.eye(N, dtype=z.dtype)
    A = A.clamp(max=1)
    E = A.sum()
    pos_weight = (N * N - E) / E
    norm = N * N / (2 * (N * N - E))
    logits = z @ z.T
    return norm * F.binary_cross_entropy_with_logits(logits, A, pos_weight=pos_weight)


@pytest.mark.parametrize("impl", ["eager", "chunked"])
@pytest.mark.parametrize("N,D", [(13, 4), (57, 3)])
def test_full_reconstruction_equals_dense_reference(impl, N, D):
    g = torch.Generator().manual_seed(N)
    z = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    ei = torch.randint(0, N, (2, 3 * N), generator=g)
    ei = torch.cat([ei, ei[:, :5]], 1)  # duplicates count once
    pos = reconstruction_targets(ei, N)
    got = full_reconstruction_loss(z, pos, impl=impl)
    ref = dense_reference(z, ei)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    g1, = torch.autograd.grad(got, z)
    g2, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_targets_are_symmetric_with_self_loops():
    rows, cols = reconstruction_targets(torch.tensor([[0, 2], [1, 2]]), 3)
    assert set(zip(rows.tolist(), cols.tolist())) == {(0, 1), (1, 0), (2, 2), (0, 0), (1, 1)}
    with pytest.raises(ValueError, match=r"edge_index values must lie in \[0, 3\)"):
        reconstruction_targets(torch.tensor([[0], [3]]), 3)


def test_bad_inputs_are_named():
    z = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"z must have shape \(N, D\)"):
        full_reconstruction_loss(z[0], (torch.tensor([0]), torch.tensor([0])))
    with pytest.raises(ValueError, match="need 0 < positives < N"):
        full_reconstruction_loss(z, (torch.tensor([], dtype=torch.long),
                                     torch.tensor([], dtype=torch.long)))
