"""DPM-Solver++ multistep (Lu et al. 2022b, Alg. 2 and its 3rd-order variant) in the log-SNR
λ = log(γ_t/σ_t), on the data prediction x̂0 = (x − σ_t ε̂)/γ_t = (x + σ_t² s_θ)/γ_t.

With h = λ_s − λ_t and φ₁ = e^{−h} − 1, first order: x_s = (σ_s/σ_t) x_t − γ_s φ₁ D₀;
higher orders replace D₀ by finite differences of earlier x̂0 in λ. Earlier x̂0 live in the step
context's memory (one call), not on the solver; the first steps warm up with lower orders.

Third order: D₁ ≈ h x̂0′ and D₂ = (D₁,₀ − D₁,₁)/(r₀ + r₁) ≈ ½ h² x̂0″, and the exact weight of
½ h² x̂0″ in ∫ e^{λ} x̂0(λ) dλ is 2φ₃ with φ₃ = (e^{−h} − 1 + h)/h² − ½. The reference code
(dpm_solver_pytorch, diffusers) weights D₂ by φ₃, which leaves a local O(h³) error: measured
global order 2.0 with φ₃ against ≈ 4 with 2φ₃ on Gaussian data (tests/test_solvers.py).

``final_step='zero'`` (default): the last step t_{N−1} → 0 is x_0 = x̂0(x_{t_{N−1}}) (σ_0 = 0,
φ₁ = −1) and the step before it at most second order (Lu et al.'s ``lower_order_final``);
``'t_min'``: every step as above, ending at t_min.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_choice

__all__ = ["DPMSolver"]

ORDERS = (2, 3)


class DPMSolver(FewStepSolver):
    """DPM-Solver++(``order``M): one score evaluation per step; ``order`` is also its declared
    convergence order."""

    order: float = 2

    def __init__(
        self,
        *shared: Any,
        order: int = 2,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.order = check_choice("order", order, ORDERS)
        self._check_final_step(final_step)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        m0 = ctx.x0(x, t)
        if s == 0.0:  # final_step='zero': σ_s = 0, first order
            return m0
        gamma_t, sigma_t = ctx.gamma(t), ctx.sigma(t)
        gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
        lam_t, lam_s = math.log(gamma_t / sigma_t), math.log(gamma_s / sigma_s)
        h = lam_s - lam_t
        history = ctx.memory.setdefault("history", [])  # [(λ, x̂0)], newest last
        order = min(self.order, len(history) + 1)
        if self.ends_at_zero:
            order = min(order, ctx.steps_left)
        phi1 = math.expm1(-h)
        if order == 1:
            x_s = (sigma_s / sigma_t) * x - gamma_s * phi1 * m0
        elif order == 2:
            lam1, m1 = history[-1]
            r0 = (lam_t - lam1) / h
            d1 = (m0 - m1) / r0
            x_s = (sigma_s / sigma_t) * x - gamma_s * phi1 * (m0 + 0.5 * d1)
        else:
            (lam2, m2), (lam1, m1) = history[-2], history[-1]
            r0, r1 = (lam_t - lam1) / h, (lam1 - lam2) / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi2 = phi1 / h + 1
            phi3 = phi2 / h - 0.5
            x_s = (sigma_s / sigma_t) * x - gamma_s * phi1 * m0 + gamma_s * phi2 * d1
            x_s = x_s - 2 * gamma_s * phi3 * d2
        history.append((lam_t, m0))
        del history[: -max(self.order - 1, 1)]
        return x_s
