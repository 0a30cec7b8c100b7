"""Linear multistep (LMS) on the probability-flow ODE in EDM variables x̃ = x/γ_t, ρ = σ_t/γ_t,
dx̃/dρ = ε̂ (Karras et al. 2022, eq. 4): variable-step Adams–Bashforth in ρ itself (the ρAB of
Zhang & Chen 2022, §4; k-diffusion's ``sample_lms``):

    x̃_s = x̃_t + Σ_j ε̂_j ∫_{ρ_t}^{ρ_s} ℓ_j(ρ) dρ,

ℓ_j the Lagrange basis on the last k nodes ρ_j. With w = (ρ − ρ_t)/(ρ_s − ρ_t) and
ℓ_j = Σ_m c_jm w^m, the integral is (ρ_s − ρ_t) Σ_m c_jm/(m + 1). The first steps warm up with
lower orders; ρ_s = 0 (``final_step='zero'``) needs no special case.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.grids import Grid, KarrasGrid
from sde_gen.solvers.options import check_choice

__all__ = ["LMS", "lms_weights"]

ORDERS = (1, 2, 3, 4)


def lms_weights(rhos: list[float], rho_s: float) -> list[float]:
    """∫_{ρ_0}^{ρ_s} ℓ_j(ρ) dρ for the Lagrange basis on ``rhos`` (newest first, ρ_0 = ρ_t)."""
    step = rho_s - rhos[0]
    w = np.array([(rho - rhos[0]) / step for rho in rhos])
    vandermonde = w[:, None] ** np.arange(len(rhos))[None, :]
    moments = step / np.arange(1, len(rhos) + 1)
    return np.linalg.solve(vandermonde.T, moments).tolist()


class LMS(FewStepSolver):
    """Linear multistep of ``order`` ≤ 4 in ρ: one evaluation a step, declared order ``order``."""

    order: float = 4
    default_grid: ClassVar[Grid] = KarrasGrid()

    def __init__(
        self,
        *shared: Any,
        order: int = 4,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.order = check_choice("order", order, ORDERS)
        self._check_final_step(final_step)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_t, gamma_s = ctx.gamma(t), ctx.gamma(s)
        history = ctx.memory.setdefault("history", [])  # [(ρ, ε̂)], newest first
        history.insert(0, (ctx.sigma(t) / gamma_t, ctx.eps(x, t)))
        del history[self.order :]
        weights = lms_weights([rho for rho, _ in history], ctx.sigma(s) / gamma_s)
        x_tilde = x / gamma_t
        for w_j, (_, eps_j) in zip(weights, history, strict=True):
            x_tilde = x_tilde + w_j * eps_j
        return gamma_s * x_tilde
