"""DEIS tAB-k (Zhang & Chen 2022, eq. 15, the ρ-form of §4): Adams–Bashforth on the
probability-flow ODE in EDM variables x̃ = x/γ_t, ρ = σ_t/γ_t, where dx̃/dρ = ε̂(x, t).

The last k values ε̂_j at u_j = log ρ_j are extrapolated by their Lagrange polynomial in u
(the "log ρ" basis) and integrated exactly in ρ:

    x̃_s = x̃_t + Σ_j ε̂_j ∫_{ρ_t}^{ρ_s} ℓ_j(log ρ) dρ.

With h = λ_s − λ_t (λ = −log ρ) and w = (λ_s − λ)/h (w = 1 at t, > 1 before it), writing
ℓ_j = Σ_m c_jm w^m gives ∫ ℓ_j dρ = −h ρ_t Σ_m c_jm m! φ_{m+1}(−h) (``exponential.phi``).
The first steps warm up with lower orders; ``lower_order_final`` lowers the order of the last
steps to the number of steps left (diffusers applies it only below 15 steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.exponential import half_log_snr, phi
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_choice, check_flag

__all__ = ["DEIS", "deis_weights"]

ORDERS = (1, 2, 3)


def deis_weights(lams: list[float], lam_s: float, rho_t: float) -> list[float]:
    """∫_{ρ_t}^{ρ_s} ℓ_j(log ρ) dρ for the Lagrange basis ℓ_j on the nodes λ_j = −log ρ_j
    (``lams``, newest first, λ_0 = λ_t): Σ_m c_jm (−h ρ_t) m! φ_{m+1}(−h), h = λ_s − λ_0."""
    h = lam_s - lams[0]
    w = np.array([(lam_s - lam) / h for lam in lams])
    vandermonde = w[:, None] ** np.arange(len(lams))[None, :]
    moments = np.array([-h * rho_t * math.factorial(m) * phi(m + 1, -h) for m in range(len(lams))])
    return np.linalg.solve(vandermonde.T, moments).tolist()


class DEIS(FewStepSolver):
    """DEIS tAB-``order`` (1 = DDIM): one score evaluation a step; ``order`` is its declared
    convergence order."""

    order: float = 3

    def __init__(
        self,
        *shared: Any,
        order: int = 3,
        lower_order_final: bool = True,
        final_step: FinalStep | str = FinalStep.T_MIN,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.order = check_choice("order", order, ORDERS)
        self.lower_order_final = check_flag("lower_order_final", lower_order_final)
        self._check_final_step(final_step)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        if s == 0.0:  # final_step='zero': ρ_s = 0, x̃_0 = x̃_t − ρ_t ε̂ = x̂0
            return ctx.x0(x, t)
        gamma_t, sigma_t = ctx.gamma(t), ctx.sigma(t)
        eps = ctx.eps(x, t)
        lam_t = half_log_snr(gamma_t, sigma_t)
        history = ctx.memory.setdefault("history", [])  # [(λ, ε̂)], newest first
        history.insert(0, (lam_t, eps))
        del history[self.order :]
        order = len(history)
        if self.lower_order_final:
            order = min(order, ctx.steps_left)
        lam_s = half_log_snr(ctx.gamma(s), ctx.sigma(s))
        weights = deis_weights([lam for lam, _ in history[:order]], lam_s, sigma_t / gamma_t)
        x_tilde = x / gamma_t
        for w_j, (_, eps_j) in zip(weights, history[:order], strict=True):
            x_tilde = x_tilde + w_j * eps_j
        return ctx.gamma(s) * x_tilde
