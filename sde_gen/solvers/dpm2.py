"""DPM-Solver-2 in EDM variables (Karras et al. 2022, Alg. 1 with the midpoint in log σ; Lu et al.
2022a, DPM-Solver-2 with r = ½; k-diffusion's ``sample_dpm_2``) and its ancestral form.

With x̃ = x/γ_t, ρ = σ_t/γ_t and dx̃/dρ = ε̂, a step from ρ_t to ρ_d takes the midpoint
ρ_m = √(ρ_t ρ_d) (λ_m = (λ_t + λ_d)/2):

    x̃_m = x̃_t + (ρ_m − ρ_t) ε̂(x_t, t),    x̃_d = x̃_t + (ρ_d − ρ_t) ε̂(x_m, m);

ρ_d = 0 (``final_step='zero'``) is the Euler step x̃_0 = x̂0. Ancestral (``eta`` > 0): the step
goes to ρ_d = √(ρ_s² − ρ_up²) and adds ρ_up z, ρ_up = min(ρ_s, η ρ_s √(ρ_t² − ρ_s²)/ρ_t), the
posterior noise of q(x̃_s | x̃_t, x0) at η = 1 (Ho et al. 2020 in EDM variables); η ≤ 1 keeps
ρ_d > 0, so every step but one onto 0 takes two evaluations.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.grids import Grid, KarrasGrid

__all__ = ["DPM2", "ancestral_split"]


def ancestral_split(rho_t: float, rho_s: float, eta: float) -> tuple[float, float]:
    """(ρ_d, ρ_up) with ρ_d² + ρ_up² = ρ_s², ρ_up = min(ρ_s, η ρ_s √(ρ_t² − ρ_s²)/ρ_t)."""
    rho_up = min(rho_s, eta * rho_s * math.sqrt(max(rho_t**2 - rho_s**2, 0.0)) / rho_t)
    return math.sqrt(rho_s**2 - rho_up**2), rho_up


class DPM2(FewStepSolver):
    """DPM-2 (``eta`` = 0, order 2) or DPM-2 ancestral (``eta`` > 0, stochastic): two
    evaluations a step; one when the step lands on ρ_d = 0."""

    order = 2.0
    evals_per_step = 2
    default_grid: ClassVar[Grid] = KarrasGrid()

    def __init__(
        self,
        *shared: Any,
        eta: float = 0.0,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        if not (isinstance(eta, int | float) and 0 <= eta <= 1):
            raise ValueError(f"eta={eta} must be a number in [0, 1]")
        self.eta = float(eta)
        self.stochastic = self.eta > 0
        self._check_final_step(final_step)

    def expected_nfe(self) -> int:
        return super().expected_nfe() - int(self.ends_at_zero)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        if s == 0.0:  # final_step='zero': the Euler step onto ρ = 0 is x̂0
            return ctx.x0(x, t)
        gamma_t, gamma_s = ctx.gamma(t), ctx.gamma(s)
        rho_t, rho_s = ctx.sigma(t) / gamma_t, ctx.sigma(s) / gamma_s
        rho_d, rho_up = ancestral_split(rho_t, rho_s, self.eta) if self.stochastic else (rho_s, 0)
        x_tilde, eps = x / gamma_t, ctx.eps(x, t)
        rho_m = math.sqrt(rho_t * rho_d)
        log_snr_m = torch.tensor([-2 * math.log(rho_m)], dtype=torch.float64)
        t_m = float(ctx.sde.t_from_log_snr(log_snr_m)[0])
        eps_m = ctx.eps(ctx.gamma(t_m) * (x_tilde + (rho_m - rho_t) * eps), t_m)
        x_tilde = x_tilde + (rho_d - rho_t) * eps_m
        if rho_up > 0:
            x_tilde = x_tilde + rho_up * ctx.noise(x)
        return gamma_s * x_tilde
