"""DDIM (Song, Meng & Ermon 2021, eq. 12) for any linear SDE through γ_t, σ_t:

x_s = γ_s x̂0 + √(σ_s² − c²) ε̂ + c z,   ε̂ = −σ_t s_θ(x_t, t),   x̂0 = (x_t − σ_t ε̂)/γ_t,
c² = η² β̃ with β̃ = σ_{t|s}² σ_s²/σ_t² the posterior variance (``sde.posterior``).
η = 0 is deterministic (Euler on the PF-ODE in σ̃ = σ/γ); η = 1 is ancestral sampling with β̃.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.solvers.base import FixedStepSolver, StepContext
from sde_gen.solvers.grids import Grid

__all__ = ["DDIM"]


class DDIM(FixedStepSolver):
    """DDIM with stochasticity ``eta`` ≥ 0; one score evaluation per step."""

    def __init__(
        self,
        steps: int = 50,
        t_min: float = 1e-3,
        grid: Grid | str = "uniform",
        eta: float = 0.0,
        denoise_final: bool = False,
        progress: bool = False,
    ):
        super().__init__(steps, t_min, grid, denoise_final, progress)
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta={eta} must be a finite number >= 0")
        self.eta = float(eta)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        sde = ctx.sde
        gamma_t, sigma_t = ctx.gamma(t), ctx.sigma(t)
        gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
        eps = -sigma_t * ctx.score(x, t)
        x0 = (x - sigma_t * eps) / gamma_t
        if self.eta == 0:
            return gamma_s * x0 + sigma_s * eps
        s64, t64 = torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
        c2 = min(self.eta**2 * float(sde.posterior(s64, t64)[2][0]), sigma_s**2)
        x_s = gamma_s * x0 + math.sqrt(sigma_s**2 - c2) * eps
        return x_s + math.sqrt(c2) * ctx.noise(x)
