"""Singlestep DPM-Solver++ (Lu et al. 2022b, §4 and Alg. 1; DPM-Solver-3 of Lu et al. 2022a,
Alg. 2) with its intermediate stages on the grid, in λ = log(γ_t/σ_t) on the data prediction x̂0.

The steps fall into groups of k = 1, 2, 3 grid intervals. A group starts from (x_b, x̂0_b = m_b)
at λ_b; the step of stage j lands on λ_s (h = λ_s − λ_b, φ₁ = e^{−h} − 1) with

    stage 1:  x_s = (σ_s/σ_b) x_b − γ_s φ₁ m_b                                   (DDIM)
    stage 2:  x_s = (σ_s/σ_b) x_b − γ_s φ₁ (m_b + (m₁ − m_b)/(2 r₁))             (2S, midpoint)
    stage 3:  x_s = (σ_s/σ_b) x_b − γ_s φ₁ m_b + γ_s (φ₁/h + 1)(m₂ − m_b)/r₂     (DPM-Solver-3)

m_j = x̂0 at stage j's start, r_j = (λ_j − λ_b)/h. Stage 2 is second order for any r₁; stage 3
is third order when r₂ = 2/3 + O(h) (its weight h φ₂(−h) ≈ h/2 on h r₂ x̂0″/2 must match
h² φ₃ ≈ h²/6): exactly on a λ-uniform grid (the default), to O(h) on any smooth grid.

Groups: ⌊N/k⌋ of ``order`` k, then one of N mod k; ``lower_order_final`` splits a last full group
into k − 1 and 1; ``final_step='zero'`` makes the last step a stage-1 group landing on x̂0.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.exponential import half_log_snr
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_choice, check_flag

__all__ = ["DPMSolverSinglestep", "stage_orders"]

ORDERS = (1, 2, 3)


def stage_orders(steps: int, order: int, lower_order_final: bool, final_zero: bool) -> list[int]:
    """The stage (1 … k) of each step: groups of ``order``, the remainder last (see above)."""
    full, rest = divmod(steps, order)
    groups = [order] * full + ([rest] if rest else [])
    if lower_order_final and rest == 0 and order > 1:
        groups[-1:] = [order - 1, 1]
    stages = [j for k in groups for j in range(1, k + 1)]
    if final_zero:
        stages[-1] = 1
    return stages


class DPMSolverSinglestep(FewStepSolver):
    """Singlestep DPM-Solver++ of ``order`` 1–3: one evaluation a step (the stages are grid
    points); declared order ``order``."""

    order: float = 3

    def __init__(
        self,
        *shared: Any,
        order: int = 3,
        lower_order_final: bool = True,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.order = check_choice("order", order, ORDERS)
        self.lower_order_final = check_flag("lower_order_final", lower_order_final)
        self._check_final_step(final_step)

    def stages(self) -> list[int]:
        """``stage_orders`` for this solver's steps."""
        final_zero = self.ends_at_zero
        return stage_orders(self.steps, self.order, self.lower_order_final, final_zero)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        memory = ctx.memory
        stage = memory.setdefault("stages", self.stages())[ctx.index]
        m = ctx.x0(x, t)
        lam_t = half_log_snr(ctx.gamma(t), ctx.sigma(t))
        if stage == 1:
            memory.update(base=(lam_t, ctx.sigma(t), x, m), points=[])
        else:
            memory["points"].append((lam_t, m))
        if s == 0.0:  # final_step='zero': a stage-1 step onto σ_s = 0 returns x̂0
            return m
        lam_b, sigma_b, x_b, m_b = memory["base"]
        gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
        h = half_log_snr(gamma_s, sigma_s) - lam_b
        phi1 = math.expm1(-h)
        x_s = (sigma_s / sigma_b) * x_b - gamma_s * phi1 * m_b
        if stage == 2:
            lam_1, m_1 = memory["points"][0]
            x_s = x_s - gamma_s * phi1 * (m_1 - m_b) / (2 * (lam_1 - lam_b) / h)
        elif stage == 3:
            lam_2, m_2 = memory["points"][1]
            x_s = x_s + gamma_s * (phi1 / h + 1) * (m_2 - m_b) / ((lam_2 - lam_b) / h)
        return x_s
