"""Heun's 2nd-order method on the probability-flow ODE in EDM form (Karras et al. 2022, Alg. 1).

With x̃ = x/γ_t and σ̃ = σ_t/γ_t the PF-ODE is dx̃/dσ̃ = ε̂(x, t) = −σ_t s_θ(x, t), for VP, sub-VP,
VE and the discrete chain alike. Each step takes an Euler predictor and the trapezoidal corrector
x̃_s = x̃_t + (σ̃_s − σ̃_t)(ε̂_t + ε̂_s)/2; the last step is Euler when ``euler_last``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from sde_gen.solvers.base import FixedStepSolver, StepContext
from sde_gen.solvers.grids import Grid, KarrasGrid

__all__ = ["Heun"]


class Heun(FixedStepSolver):
    """nfe = 2·steps − 1 with ``euler_last`` (EDM), 2·steps otherwise (+1 if denoise_final)."""

    order = 2.0
    stochastic = False
    evals_per_step = 2
    default_steps = 18
    default_grid: ClassVar[Grid] = KarrasGrid()

    def __init__(self, *shared: Any, euler_last: bool = True, **options: Any):
        super().__init__(*shared, **options)
        self.euler_last = bool(euler_last)

    def expected_nfe(self) -> int:
        return super().expected_nfe() - int(self.euler_last)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_t, gamma_s = ctx.gamma(t), ctx.gamma(s)
        sig_t, sig_s = ctx.sigma(t) / gamma_t, ctx.sigma(s) / gamma_s
        d_t = ctx.eps(x, t)
        x_tilde = x / gamma_t + (sig_s - sig_t) * d_t
        if ctx.is_last and self.euler_last:
            return gamma_s * x_tilde
        d_s = ctx.eps(gamma_s * x_tilde, s)
        return gamma_s * (x / gamma_t + (sig_s - sig_t) * 0.5 * (d_t + d_s))
