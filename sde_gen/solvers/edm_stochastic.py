"""EDM's stochastic sampler (Karras et al. 2022, Alg. 2) in x̃ = x/γ_t, ρ = σ_t/γ_t.

Each step first raises the noise level, ρ̂ = ρ_t (1 + γ_i) with γ_i = min(S_churn/N, √2 − 1) for
ρ_t ∈ [S_tmin, S_tmax] (else 0), by adding fresh noise x̃̂ = x̃_t + √(ρ̂² − ρ_t²) S_noise z, then
takes the Heun step of ``heun.py`` from ρ̂ to ρ_s (Euler on the last step with ``euler_last``).
ρ̂ is capped at ρ(T), the largest noise level the SDE defines (a churn above it has no time t̂).
S_churn = 0 is Heun.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sde_gen.solvers.base import StepContext
from sde_gen.solvers.heun import Heun
from sde_gen.solvers.options import check_non_negative

__all__ = ["EDMStochastic"]


class EDMStochastic(Heun):
    """Heun with churn (``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``; stochastic when
    S_churn > 0): nfe as Heun, one N(0, I) draw a churned step."""

    default_steps = 18

    def __init__(
        self,
        *shared: Any,
        s_churn: float = 40.0,
        s_tmin: float = 0.05,
        s_tmax: float = 50.0,
        s_noise: float = 1.003,
        euler_last: bool = True,
        **options: Any,
    ):
        super().__init__(*shared, euler_last=euler_last, **options)
        self.s_churn = check_non_negative("s_churn", s_churn)
        self.s_tmin = check_non_negative("s_tmin", s_tmin)
        self.s_tmax = check_non_negative("s_tmax", s_tmax)
        self.s_noise = check_non_negative("s_noise", s_noise)
        if self.s_tmax < self.s_tmin:
            raise ValueError(f"s_tmax={s_tmax} must be >= s_tmin={s_tmin}")
        self.stochastic = self.s_churn > 0

    def churn(self, rho_t: float) -> float:
        """γ_i = min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax], else 0 (Alg. 2, line 4)."""
        inside = self.s_tmin <= rho_t <= self.s_tmax
        return min(self.s_churn / self.steps, math.sqrt(2) - 1) if inside else 0.0

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_t = ctx.gamma(t)
        rho_t = ctx.sigma(t) / gamma_t
        rho_top = ctx.sigma(ctx.sde.T) / ctx.gamma(ctx.sde.T)
        rho_hat = min(rho_t * (1 + self.churn(rho_t)), rho_top)
        if rho_hat <= rho_t:
            return super().step(ctx, x, t, s)
        log_snr = torch.tensor([-2 * math.log(rho_hat)], dtype=torch.float64)
        t_hat = min(float(ctx.sde.t_from_log_snr(log_snr)[0]), ctx.sde.T)
        rho_hat = ctx.sigma(t_hat) / ctx.gamma(t_hat)  # the level the score is evaluated at
        x_tilde = x / gamma_t + math.sqrt(rho_hat**2 - rho_t**2) * self.s_noise * ctx.noise(x)
        return super().step(ctx, ctx.gamma(t_hat) * x_tilde, t_hat, s)
