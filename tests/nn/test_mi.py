"""MI estimators against naive formulas; CLUB separates dependent from independent components."""

from __future__ import annotations

import pytest
import torch

from disenkg.nn.mi import MI_ESTIMATORS, CLUBSample, distance_correlation, hsic

TESTED_MI = {"club_b", "club_s", "dcor", "hsic"}


def naive_club(est: CLUBSample, x, y, perm):
    total = 0.0
    for b in range(x.shape[0]):
        mu, lv = est.mu(x[b]), est.logvar(x[b])
        pos = ((mu - y[b]) ** 2 / lv.exp()).sum()
        neg = ((mu - y[perm[b]]) ** 2 / lv.exp()).sum()
        total = total + 0.5 * (neg - pos)
    return total / x.shape[0]


@pytest.mark.parametrize("full", [False, True])
def test_club_sample_against_naive(full):
    torch.manual_seed(0)
    est = CLUBSample(x_dim=4, y_dim=3, hidden=6, full_likelihood=full).double()
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 3, dtype=torch.float64)
    torch.manual_seed(5)
    out = est(x, y)
    torch.manual_seed(5)
    perm = torch.randperm(7)
    ref = naive_club(est, x, y, perm)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0])
    # Gaussian log-likelihood, element by element
    mu, lv = est.mu(x), est.logvar(x)
    ll = sum(-0.5 * (mu[b, f] - y[b, f]) ** 2 / lv[b, f].exp() - 0.5 * lv[b, f] * full
             for b in range(7) for f in range(3)) / 7
    torch.testing.assert_close(est.log_likelihood(x, y), ll)


def naive_dcor(a, b):
    n = a.shape[0]
    A = torch.stack([torch.stack([torch.norm(a[i] - a[j]) for j in range(n)]) for i in range(n)])
    B = torch.stack([torch.stack([torch.norm(b[i] - b[j]) for j in range(n)]) for i in range(n)])
    A = A - A.mean(0) - A.mean(1, keepdim=True) + A.mean()
    B = B - B.mean(0) - B.mean(1, keepdim=True) + B.mean()
    return torch.sqrt((A * B).mean()) / torch.sqrt(torch.sqrt((A * A).mean() * (B * B).mean()))


def test_distance_correlation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 5, generator=g, dtype=torch.float64)
    b = torch.randn(40, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(distance_correlation(a, b), naive_dcor(a, b), atol=1e-4, rtol=1e-4)
    assert distance_correlation(a, 2 * a + 1) > 0.99
    assert distance_correlation(a, b) < 0.6


def test_hsic_naive():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(9, 4, generator=g, dtype=torch.float64)
    b = torch.randn(9, 4, generator=g, dtype=torch.float64)
    H = torch.eye(4, dtype=torch.float64) - torch.full((4, 4), 0.25, dtype=torch.float64)
    ref = torch.trace(H @ (a.T @ a) @ H @ (b.T @ b))
    torch.testing.assert_close(hsic(a, b), ref)


def fit(est, z, steps=300):
    opt = torch.optim.Adam(est.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        est.learning_loss(z).backward()
        opt.step()
    return est


@pytest.mark.parametrize("name", ["club_b", "club_s"])
def test_club_bound_larger_for_dependent_components(name):
    torch.manual_seed(0)
    B, K, Fd = 256, 3, 4
    indep = torch.randn(B, K, Fd)
    base = torch.randn(B, 1, Fd)
    dep = base + 0.1 * torch.randn(B, K, Fd)  # components nearly equal
    est_i = fit(MI_ESTIMATORS.get(name)(num_components=K, channels=Fd), indep)
    est_d = fit(MI_ESTIMATORS.get(name)(num_components=K, channels=Fd), dep)
    with torch.no_grad():
        mi_i, mi_d = est_i(indep), est_d(dep)
    assert mi_d > 10 * abs(mi_i) and mi_d > 1.0


@pytest.mark.parametrize("name", ["dcor", "hsic"])
def test_nonparametric_penalties(name):
    torch.manual_seed(0)
    est = MI_ESTIMATORS.get(name)(num_components=3, channels=4)
    indep = torch.randn(128, 3, 4)
    dep = torch.randn(128, 1, 4).expand(128, 3, 4) + 0.05 * torch.randn(128, 3, 4)
    pairs = [(0, 1), (0, 2), (1, 2)]
    fn = distance_correlation if name == "dcor" else hsic
    torch.testing.assert_close(est(indep), sum(fn(indep[:, k], indep[:, l]) for k, l in pairs))
    if name == "dcor":  # (HSIC on feature Gram matrices is not a sample-dependence measure)
        assert est(dep) > 2 * est(indep)
    assert not est.learns and list(est.parameters()) == []
    z = indep.clone().requires_grad_()
    est(z).backward()
    assert torch.isfinite(z.grad).all()


def test_registry_error():
    with pytest.raises(ValueError, match=r"unknown MI estimator 'club'; choose one of"):
        MI_ESTIMATORS.get("club")
