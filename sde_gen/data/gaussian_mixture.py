"""Gaussian mixtures: data whose diffused marginal q_t and score are exact at every t."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sde_gen.data.base import DataSource, check_count
from sde_gen.sde import SDE


class GaussianMixture(DataSource):
    """p(x) = Σ_k w_k N(x; μ_k, diag(s_k²)) in D dimensions.

    ``stds`` is a scalar (all components isotropic alike), shape (K,) (isotropic per component) or
    (K, D) (diagonal). Under a linear SDE each component stays Gaussian:
    q_t = Σ_k w_k N(γ_t μ_k, γ_t² s_k² + σ_t²), so ``log_prob`` and ``score`` are exact (float64).
    A zero std makes a point mass (e.g. the empirical distribution of a training set): it samples,
    and q_t has an exact density and score at every t > 0 (σ_t > 0), but at t = None (the data)
    or t = 0 there is no density, and ``log_prob``/``score`` say so.
    """

    def __init__(
        self,
        weights: Sequence[float] | Tensor,
        means: Sequence[Sequence[float]] | Tensor,
        stds: float | Sequence | Tensor,
    ):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        _check_finite("means", means)
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,):
            raise ValueError(f"weights shape {tuple(weights.shape)} != (K,) = ({k},)")
        if (weights <= 0).any() or not torch.isfinite(weights).all():
            raise ValueError(f"weights must be positive and finite, got {weights.tolist()}")
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(k, d)
        elif stds.shape == (k,):
            stds = stds[:, None].expand(k, d)
        elif stds.shape != (k, d):
            raise ValueError(
                f"stds must be a scalar, (K,) or (K, D) = ({k}, {d}); got {tuple(stds.shape)}"
            )
        _check_finite("stds", stds)
        if (stds < 0).any():
            raise ValueError(f"stds must be >= 0, got min {stds.min().item()}")
        self.weights = weights / weights.sum()
        self.means = means
        self.stds = stds.contiguous()
        self.shape = (d,)

    @property
    def exact(self) -> GaussianMixture:
        return self

    @property
    def dim(self) -> int:
        return self.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n i.i.d. draws, float32."""
        return self.sample64(n, generator).to(torch.float32)

    def sample64(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n i.i.d. draws in float64."""
        n = check_count(n)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[comp] + self.stds[comp] * z

    def _check(self, x: Tensor, t: Tensor | None) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if t is not None and (t.ndim != 1 or t.shape[0] != x.shape[0]):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")

    def _moments(self, t: Tensor | None, sde: SDE | None, n: int) -> tuple[Tensor, Tensor]:
        """Per-sample component means (B, K, D) and variances (B, K, D) of q_t."""
        point_mass = bool((self.stds == 0).any())
        if t is None or sde is None:
            if point_mass:
                raise ValueError(
                    "stds=0 makes point masses: the data (t=None) have no density; log_prob and "
                    "score exist only for the diffused q_t at t > 0"
                )
            return self.means.expand(n, -1, -1), (self.stds**2).expand(n, -1, -1)
        gamma = sde.gamma(t.to(torch.float64))[:, None, None]
        sigma = sde.sigma(t.to(torch.float64))[:, None, None]
        if point_mass and (sigma == 0).any():
            bad = t.flatten()[(sigma == 0).flatten()][0].item()
            raise ValueError(
                f"stds=0 makes point masses: q_t has no density at t={bad} (σ_t = 0); log_prob "
                "and score exist only for t > 0"
            )
        return gamma * self.means, gamma**2 * self.stds**2 + sigma**2

    def _component_log_probs(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        diff = x[:, None, :] - mean
        return (
            torch.log(self.weights)
            - 0.5 * (diff**2 / var).sum(-1)
            - 0.5 * torch.log(2 * math.pi * var).sum(-1)
        )

    def log_prob(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """log q_t(x) of the mixture diffused by ``sde`` to time t (data density if t is None)."""
        self._check(x, t)
        x64 = x.to(torch.float64)
        mean, var = self._moments(t, sde, x.shape[0])
        return torch.logsumexp(self._component_log_probs(x64, mean, var), dim=1).to(
            x.dtype if x.is_floating_point() else torch.float64
        )

    def score(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """∇ₓ log q_t(x) = Σ_k r_k(x) (γμ_k − x)/v_k with responsibilities r_k."""
        self._check(x, t)
        x64 = x.to(torch.float64)
        mean, var = self._moments(t, sde, x.shape[0])
        resp = torch.softmax(self._component_log_probs(x64, mean, var), dim=1)
        return (resp[..., None] * (mean - x64[:, None, :]) / var).sum(1).to(x.dtype)

    def score_fn(self, sde: SDE) -> MixtureScore:
        """The exact score of q_t as a ``score_fn(x, t)`` for solvers and likelihoods."""
        return MixtureScore(self, sde)


def _check_finite(name: str, value: Tensor) -> None:
    bad = (~torch.isfinite(value)).nonzero()
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name} must be finite, got {name}{list(idx)}={value[idx].item()}")


class MixtureScore:
    """score_fn(x, t) = ∇ₓ log q_t(x) for a Gaussian mixture diffused by an SDE."""

    def __init__(self, mixture: GaussianMixture, sde: SDE):
        self.mixture, self.sde = mixture, sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.score(x, t, self.sde)


def ring_mixture(
    num_modes: int = 8, radius: float = 2.0, std: float = 0.1, dim: int = 2
) -> GaussianMixture:
    """Equal-weight isotropic Gaussians evenly spaced on a circle (first two coordinates)."""
    if num_modes < 1:
        raise ValueError(f"num_modes={num_modes} must be >= 1")
    angle = 2 * math.pi * torch.arange(num_modes, dtype=torch.float64) / num_modes
    means = torch.zeros(num_modes, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
    return GaussianMixture(torch.ones(num_modes), means, std)


def random_mixture(
    num_modes: int = 4, dim: int = 64, scale: float = 1.0, seed: int = 0
) -> GaussianMixture:
    """A fixed random mixture: unequal weights, diagonal stds in [0.05, 0.3], means ~ N(0, s²)."""
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(num_modes, dim, dtype=torch.float64, generator=g)
    stds = 0.05 + 0.25 * torch.rand(num_modes, dim, dtype=torch.float64, generator=g)
    weights = 0.5 + torch.rand(num_modes, dtype=torch.float64, generator=g)
    return GaussianMixture(weights, means, stds)
