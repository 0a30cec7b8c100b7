"""DDIM (Song, Meng & Ermon 2021, eq. 12) for any linear SDE through γ_t, σ_t:

x_s = γ_s x̂0 + √(σ_s² − c²) ε̂ + c z,   ε̂ = −σ_t s_θ(x_t, t),   x̂0 = (x_t + σ_t² s_θ)/γ_t,
c² = η² β̃ with β̃ = σ_{t|s}² σ_s²/σ_t² the posterior variance (``sde.posterior``).
η = 0 is deterministic (Euler on the PF-ODE in σ̃ = σ/γ); η = 1 is ancestral sampling with β̃.
With ``final_step='zero'`` (default) the last step goes to s = 0, where γ_0 = 1, σ_0 = β̃ = 0, so
it returns x̂0 of the last evaluation; ``'t_min'`` ends at t_min.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from sde_gen.sde.conversions import eps_from_score, x0_from_score
from sde_gen.solvers.base import FinalStep, FixedStepSolver, StepContext

__all__ = ["DDIM"]


class DDIM(FixedStepSolver):
    """DDIM with stochasticity ``eta`` ≥ 0 (stochastic when η > 0); one score evaluation a step."""

    order = 1.0
    stochastic = False
    evals_per_step = 1

    def __init__(
        self,
        *shared: Any,
        eta: float = 0.0,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta={eta} must be a finite number >= 0")
        self.eta = float(eta)
        self.stochastic = self.eta > 0
        self._check_final_step(final_step)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_t, sigma_t = ctx.gamma(t), ctx.sigma(t)
        gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
        score = ctx.score(x, t)
        eps, x0 = eps_from_score(score, sigma_t), x0_from_score(x, score, gamma_t, sigma_t)
        if self.eta == 0:
            return gamma_s * x0 + sigma_s * eps
        c2 = min(self.eta**2 * ctx.posterior_variance(t, s), sigma_s**2)
        x_s = gamma_s * x0 + math.sqrt(sigma_s**2 - c2) * eps
        return x_s + math.sqrt(c2) * ctx.noise(x)
