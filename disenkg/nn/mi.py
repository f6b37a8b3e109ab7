r"""Dependence penalties between the K components of entity embeddings.

Inputs are ``z`` of shape ``(B, K, F)`` (a batch of entity embeddings). Registered:

* ``club_b``: a sampled CLUB estimator (Cheng et al., ICML 2020) for every pair
  :math:`k < l`, :math:`\hat I(z_k; z_l)`;
* ``club_s``: for each :math:`k \ge 1`, CLUB between the concatenation of components
  :math:`z_{<k}` and :math:`z_k`;
* ``dcor``: sum over pairs of the distance correlation (Székely et al. 2007);
* ``hsic``: sum over pairs of the (biased, linear-kernel) HSIC statistic
  :math:`\operatorname{tr}(H K_k H K_l)` with feature Gram matrices, as DisenKGAT.

Sampled CLUB upper bound with a variational Gaussian :math:`q_\theta(y|x) =
\mathcal N(\mu(x), \operatorname{diag}(e^{\lambda(x)}))` and a random permutation
:math:`\pi` of the batch:

.. math::
    \hat I_{\mathrm{CLUB}} = \frac{1}{B}\sum_b \frac12 \sum_f
        \frac{(\mu_{bf} - y_{\pi(b) f})^2 - (\mu_{bf} - y_{bf})^2}{e^{\lambda_{bf}}}

The estimator's own parameters are fitted by maximising the log-likelihood
:math:`\frac1B\sum_b \log q_\theta(y_b|x_b)` (:meth:`learning_loss` is its negative) by a
separate optimiser on detached embeddings. By default the likelihood is the authors'
released one, :math:`-\frac12 \sum_f (\mu_f - y_f)^2 e^{-\lambda_f}`, which omits the
:math:`-\frac12\lambda_f` term of the Gaussian density, so the variance head saturates at
its upper bound (``tanh``: :math:`\lambda \to 1`) and the penalty stays tame;
``full_likelihood=True`` uses the CLUB paper's Gaussian log-density (on UMLS it let the
encoder drive the bound strongly negative within a few epochs and hurt MRR).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from disenkg.utils import Registry

__all__ = ["MI_ESTIMATORS", "CLUBSample", "MIEstimator", "distance_correlation", "hsic"]

MI_ESTIMATORS: Registry[type[MIEstimator]] = Registry("MI estimator")


class CLUBSample(nn.Module):
    r"""Sampled CLUB estimator of :math:`I(X; Y)`.

    Args:
        x_dim (int): size of :math:`x`.
        y_dim (int): size of :math:`y`.
        hidden (int): hidden width of the two heads (each uses ``hidden // 2``).
        full_likelihood (bool): Gaussian log-density with the ``-logvar / 2`` term (CLUB
            paper) instead of the authors' variant. (default: ``False``)
    """

    def __init__(self, *, x_dim: int, y_dim: int, hidden: int,
                 full_likelihood: bool = False) -> None:
        super().__init__()
        self.full_likelihood = full_likelihood
        h = max(1, hidden // 2)
        self.mu = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU(), nn.Linear(h, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, h), nn.ReLU(), nn.Linear(h, y_dim),
                                    nn.Tanh())

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        ll = -0.5 * (mu - y) ** 2 / logvar.exp()
        if self.full_likelihood:
            ll = ll - 0.5 * logvar
        return ll.sum(-1).mean()

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        return -self.log_likelihood(x, y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        inv_var = (-logvar).exp()
        positive = ((mu - y) ** 2 * inv_var).sum(-1)
        negative = ((mu - y[perm]) ** 2 * inv_var).sum(-1)
        return 0.5 * (negative - positive).mean()


class MIEstimator(nn.Module):
    """Base: ``forward(z (B, K, F)) -> scalar`` penalty; CLUB variants also learn."""

    learns: bool = False

    def __init__(self, *, num_components: int, channels: int) -> None:
        super().__init__()
        self.num_components, self.channels = num_components, channels

    def learning_loss(self, z: Tensor) -> Tensor:  # pragma: no cover - CLUB only
        raise NotImplementedError(f"{type(self).__name__} has no learnable parameters")

    def reset_parameters(self) -> None:
        for m in self.children():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def _pairs(K: int) -> list[tuple[int, int]]:
    return [(k, l) for k in range(K) for l in range(k + 1, K)]


@MI_ESTIMATORS.register("club_b")
class CLUBPairs(MIEstimator):
    """One CLUB estimator per component pair ``k < l``."""

    learns = True

    def __init__(self, *, num_components: int, channels: int) -> None:
        super().__init__(num_components=num_components, channels=channels)
        self.pairs = _pairs(num_components)
        self.estimators = nn.ModuleList(
            CLUBSample(x_dim=channels, y_dim=channels, hidden=channels) for _ in self.pairs)

    def forward(self, z: Tensor) -> Tensor:
        return sum((est(z[:, k], z[:, l]) for est, (k, l) in zip(self.estimators, self.pairs)),
                   z.new_zeros(()))

    def learning_loss(self, z: Tensor) -> Tensor:
        return sum((est.learning_loss(z[:, k], z[:, l])
                    for est, (k, l) in zip(self.estimators, self.pairs)), z.new_zeros(()))


@MI_ESTIMATORS.register("club_s")
class CLUBSequential(MIEstimator):
    """CLUB between ``z_{<k}`` (concatenated) and ``z_k`` for ``k = 1 .. K-1``."""

    learns = True

    def __init__(self, *, num_components: int, channels: int) -> None:
        super().__init__(num_components=num_components, channels=channels)
        self.estimators = nn.ModuleList(
            CLUBSample(x_dim=k * channels, y_dim=channels, hidden=k * channels)
            for k in range(1, num_components))

    def forward(self, z: Tensor) -> Tensor:
        return sum((est(z[:, :k].flatten(1), z[:, k])
                    for k, est in enumerate(self.estimators, start=1)), z.new_zeros(()))

    def learning_loss(self, z: Tensor) -> Tensor:
        return sum((est.learning_loss(z[:, :k].flatten(1), z[:, k])
                    for k, est in enumerate(self.estimators, start=1)), z.new_zeros(()))


def distance_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Sample distance correlation of ``a`` and ``b`` (``(B, F)`` each).

    .. math::
        \mathrm{dCor} = \frac{\mathrm{dCov}(a, b)}{\sqrt{\mathrm{dCov}(a,a)\,\mathrm{dCov}(b,b)}}
        ,\quad \mathrm{dCov}^2 = \frac{1}{B^2}\sum_{ij} A_{ij} B_{ij}

    with doubly centred pairwise Euclidean distance matrices ``A``, ``B`` (between samples).
    ``eps`` keeps square roots differentiable at zero.
    """
    da = torch.sqrt((torch.cdist(a, a) ** 2).clamp_min(0) + eps)
    db = torch.sqrt((torch.cdist(b, b) ** 2).clamp_min(0) + eps)

    def centre(d: Tensor) -> Tensor:
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    A, Bm = centre(da), centre(db)
    n2 = a.shape[0] ** 2
    dcov_ab = torch.sqrt(((A * Bm).sum() / n2).clamp_min(0) + eps)
    dcov_aa = torch.sqrt(((A * A).sum() / n2).clamp_min(0) + eps)
    dcov_bb = torch.sqrt(((Bm * Bm).sum() / n2).clamp_min(0) + eps)
    return dcov_ab / torch.sqrt(dcov_aa * dcov_bb + eps)


def hsic(a: Tensor, b: Tensor) -> Tensor:
    r"""DisenKGAT's HSIC statistic :math:`\operatorname{tr}(H\,a^\top a\,H\,b^\top b)` with
    the centring matrix :math:`H = I - \frac1F \mathbf 1\mathbf 1^\top` over features."""
    F = a.shape[1]
    H = torch.eye(F, dtype=a.dtype, device=a.device) - 1.0 / F
    Ka, Kb = a.T @ a, b.T @ b
    return torch.trace(H @ Ka @ H @ Kb)


@MI_ESTIMATORS.register("dcor")
class DistanceCorrelationPenalty(MIEstimator):
    """Sum of pairwise distance correlations between components."""

    def forward(self, z: Tensor) -> Tensor:
        return sum((distance_correlation(z[:, k], z[:, l])
                    for k, l in _pairs(self.num_components)), z.new_zeros(()))


@MI_ESTIMATORS.register("hsic")
class HSICPenalty(MIEstimator):
    """Sum of pairwise HSIC statistics between components."""

    def forward(self, z: Tensor) -> Tensor:
        return sum((hsic(z[:, k], z[:, l]) for k, l in _pairs(self.num_components)),
                   z.new_zeros(()))
