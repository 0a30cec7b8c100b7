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
from functools import partial

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.solvers.base import tweedie_x0

__all__ = ["PriorLogp", "Prior", "StandardPrior", "MatchedPrior", "FixedPrior", "checked_score"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
PriorLogp = Callable[[Tensor], Tensor]
Prior = Callable[[SDE, ScoreFn, Tensor], tuple[PriorLogp, int]]


def checked_score(score_fn: ScoreFn, x: Tensor, t: float) -> Tensor:
    """score_fn(x, t) at one time t for the likelihood and its prior: a ValueError naming the
    shape, or t where the score is not finite."""
    out = score_fn(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"score_fn returned shape {got} for x of shape {tuple(x.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"score_fn returned a non-finite score (NaN or inf) at t={t:.6g}")
    return out


class StandardPrior:
    """π = N(0, s² I), the SDE's prior (Song et al. 2021's convention); no evaluation."""

    def __call__(self, sde: SDE, score_fn: ScoreFn, like: Tensor) -> tuple[PriorLogp, int]:
        return sde.prior_logp, 0

    def __repr__(self) -> str:
        return "StandardPrior()"


@dataclass(frozen=True)
class FixedPrior:
    """π given as a log density of x_T (e.g. the exact log q_T of a mixture); no evaluation."""

    logp: PriorLogp

    def __call__(self, sde: SDE, score_fn: ScoreFn, like: Tensor) -> tuple[PriorLogp, int]:
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

    def mean(self, sde: SDE, score_fn: ScoreFn, like: Tensor) -> Tensor:
        """μ̂_T = γ_T · mean x̂0(±z_k) (``tweedie_x0`` at T), of ``like``'s trailing shape, in
        float64; the score runs in ``like``'s dtype (``checked_score``)."""
        g = torch.Generator().manual_seed(self.seed)
        half = sde.prior_sample((self.pairs, *like.shape[1:]), g, torch.float64)
        z = torch.cat([half, -half]).to(device=like.device, dtype=like.dtype)
        x0 = tweedie_x0(sde, partial(checked_score, score_fn), z, sde.T)
        x0 = x0.detach().to(torch.float64)
        gamma_T = sde.gamma(torch.tensor([sde.T], dtype=torch.float64)).to(x0.device)
        return gamma_T * x0.mean(0)

    def __call__(self, sde: SDE, score_fn: ScoreFn, like: Tensor) -> tuple[PriorLogp, int]:
        mu = self.mean(sde, score_fn, like)
        return (lambda x_T: sde.prior_logp(x_T - mu)), 1
