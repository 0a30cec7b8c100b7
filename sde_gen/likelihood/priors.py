"""The prior π of the PF-ODE likelihood, log p(x) = log π(x_T) + ∫ ∇·drift (survey §4.3).

The SDE's own prior N(0, s² I) differs from the marginal q_T = (γ_T ·)_# q_0 ∗ N(0, σ_T² I) in its
mean by γ_T E[x0], which costs every sample γ_T (E x0)·x_T/s² nats (first order in γ_T): about
√(2/π) γ_T |E x0|/s, ~0.01 nats on a 16-D mixture under VP, whatever the integrator. The score at
T knows that mean. By Tweedie's formula, E[γ_T x0 | x_T = z] = z + σ_T² s(z, T), and at T this
conditional mean is γ_T E[x0] up to O(γ_T³). ``MatchedPrior`` moves the SDE's prior to it. What
remains is the mismatch of the covariances, O(γ_T²).

A prior is a callable ``prior(sde, score_fn, like) -> (log π, evaluations)``. ``like`` is a tensor
whose trailing shape, dtype and device the points take. ``log π`` maps x_T of shape (B, ...) to
per-sample log densities. It is fixed by the model before any datum is seen, so log p stays a
normalised density of x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn

__all__ = ["PriorLogp", "Prior", "StandardPrior", "MatchedPrior", "FixedPrior"]

PriorLogp = Callable[[Tensor], Tensor]
Prior = Callable[[SDE, ScoreCallable, Tensor], tuple[PriorLogp, int]]


class StandardPrior:
    """π = N(0, s² I), the SDE's prior (Song et al. 2021's convention); no evaluation."""

    def __call__(self, sde: SDE, score_fn: ScoreCallable, like: Tensor) -> tuple[PriorLogp, int]:
        return sde.prior_logp, 0

    def __repr__(self) -> str:
        return "StandardPrior()"


@dataclass(frozen=True)
class FixedPrior:
    """π given as a log density of x_T (e.g. the exact log q_T of a mixture); no evaluation."""

    logp: PriorLogp

    def __call__(self, sde: SDE, score_fn: ScoreCallable, like: Tensor) -> tuple[PriorLogp, int]:
        return self.logp, 0


@dataclass(frozen=True)
class MatchedPrior:
    """π = N(μ̂_T, s² I): the SDE's prior moved to the mean the score implies at T, one evaluation.

    μ̂_T = mean_k [z_k + σ_T² s(z_k, T)] (Tweedie) over ``pairs`` antithetic pairs ±z_k ~ N(0, s² I)
    drawn from ``seed``: the points lie where q_T has its mass, and for data with a symmetric
    distribution (or a linear score) μ̂_T is exactly zero, the standard prior.
    """

    pairs: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, int) or self.pairs < 1:
            raise ValueError(f"pairs={self.pairs!r} must be an integer >= 1")

    def mean(self, sde: SDE, score_fn: ScoreCallable, like: Tensor) -> Tensor:
        """μ̂_T = γ_T · mean x̂0(±z_k) (``ScoreFn.x0`` at T), of ``like``'s trailing shape, in
        float64; the score runs in ``like``'s dtype."""
        g = torch.Generator().manual_seed(self.seed)
        half = sde.prior_sample((self.pairs, *like.shape[1:]), g, torch.float64)
        z = torch.cat([half, -half]).to(device=like.device, dtype=like.dtype)
        x0 = ScoreFn.of(score_fn, sde).x0(z, sde.T)
        x0 = x0.detach().to(torch.float64)
        gamma_T = sde.gamma(torch.tensor([sde.T], dtype=torch.float64)).to(x0.device)
        return gamma_T * x0.mean(0)

    def __call__(self, sde: SDE, score_fn: ScoreCallable, like: Tensor) -> tuple[PriorLogp, int]:
        mu = self.mean(sde, score_fn, like)
        return (lambda x_T: sde.prior_logp(x_T - mu)), 1
