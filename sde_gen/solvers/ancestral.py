"""DDPM ancestral sampling (survey Algorithm 2; Ho et al. 2020) on any linear SDE.

Between grid points s < t the chain has α_t = γ_{t|s}², β_t = σ_{t|s}² (``sde.transition``),
and with ε_θ = −σ_t s_θ
x_s = 1/√α_t (x_t − β_t/σ_t ε_θ) + σ z = (x_t + β_t s_θ(x_t, t)) / γ_{t|s} + σ z,
Tweedie's estimate of x_s from x_t = γ_{t|s} x_s + σ_{t|s} z, i.e. the posterior mean of
q(x_s | x_t, x̂0). σ² = β_t (``variance: beta``) or β̃_t = σ_{t|s}² σ_s²/σ_t²
(``variance: beta_tilde``, ``sde.posterior``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.conversions import x0_from_score
from sde_gen.solvers.base import FixedStepSolver, StepContext
from sde_gen.solvers.grids import Grid

__all__ = ["Ancestral"]

VARIANCES = ("beta", "beta_tilde")


class Ancestral(FixedStepSolver):
    """Algorithm 2 with ``steps`` score evaluations. With ``denoise_final`` (default): ``steps − 1``
    noisy steps on the grid from T to t_min, then the noiseless last step t_min → 0 (which is
    Tweedie's x̂0, so no extra evaluation). Without: ``steps`` steps from T to t_min, the last one
    noiseless, returning x at t_min.

    With ``DiscreteVPSDE`` of N betas, ``steps=N``, ``t_min=1/N`` and the uniform grid the times
    are t_i = i/N and this is the DDPM chain exactly.
    """

    order = 1.0
    stochastic = True
    evals_per_step = 1
    ends_at_zero = True

    def __init__(
        self,
        steps: int = 1000,
        t_min: float = 1e-3,
        grid: Grid | None = None,
        variance: str = "beta",
        denoise_final: bool = True,
        progress: bool = False,
    ):
        super().__init__(
            steps=steps, t_min=t_min, grid=grid, denoise_final=denoise_final, progress=progress
        )
        if variance not in VARIANCES:
            raise ValueError(f"variance={variance!r} is not one of {VARIANCES}")
        self.variance = variance

    def time_grid(self, sde: SDE) -> Tensor:
        if not self.denoise_final:
            return self.grid(sde, self.steps, self.t_min)
        if self.steps == 1:
            return torch.tensor([sde.T, 0.0], dtype=torch.float64)
        grid = self.grid(sde, self.steps - 1, self.t_min)
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_ts, beta = ctx.transition(t, s)
        mean = x0_from_score(x, ctx.score(x, t), gamma_ts, math.sqrt(beta))
        if ctx.is_last:
            return mean
        var = beta if self.variance == "beta" else ctx.posterior_variance(t, s)
        return mean + math.sqrt(var) * ctx.noise(x)
