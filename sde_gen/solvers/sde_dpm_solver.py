"""SDE-DPM-Solver++ multistep (Lu et al. 2022b, §5 "SDE-DPM-Solver++(2M)", and its third-order
variant): the reverse SDE on the data prediction x̂0 in λ = log(γ_t/σ_t), its linear part and
its noise integrated exactly. With h = λ_s − λ_t and φ_k of ``exponential.py``,

    x_s = (σ_s/σ_t) e^{−h} x_t + γ_s Σ_k 2 h^{k+1} φ_{k+1}(−2h) x̂0^{(k)}(λ_t)
          + σ_s √(1 − e^{−2h}) z,

since ∫_0^h 2 e^{−2(h−u)} u^k/k! du = 2 h^{k+1} φ_{k+1}(−2h); the k = 0 weight is 1 − e^{−2h}.
Multistep differences stand in for the derivatives (as in ``dpm_solver.py``): D₁ ≈ h x̂0′ with
weight 2hφ₂(−2h) (``variant='exact'``, diffusers' "heun") or ½(1 − e^{−2h}) (``'midpoint'``,
Lu et al.'s 2M and diffusers' default), and at third order D₂ ≈ ½h² x̂0″ with weight 4hφ₃(−2h).
The first order is DDIM with η = 1 (ancestral sampling with β̃).

diffusers' 3M SDE weights D₂ by (1 − e^{−2h} − 2h)/(4h²) − ½ ≈ −1 instead of 4hφ₃(−2h) ≈ 2h/3
(tests/test_sde_dpm_solver.py pins the difference). ``final_step='zero'``: the last step returns
x̂0 of the last evaluation; ``lower_order_final`` caps the order at the steps left.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.exponential import half_log_snr, phi
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_choice, check_enum, check_flag

__all__ = ["SDEDPMSolver", "SecondOrder", "sde_weights"]

ORDERS = (1, 2, 3)


class SecondOrder(str, Enum):
    """Weight of D₁ at second order: ``midpoint`` ½(1 − e^{−2h}), ``exact`` 2hφ₂(−2h)."""

    MIDPOINT = "midpoint"
    EXACT = "exact"

    def __repr__(self) -> str:
        return repr(self.value)


def sde_weights(h: float) -> tuple[float, float, float]:
    """(1 − e^{−2h}, 2hφ₂(−2h), 4hφ₃(−2h)): the exact weights of x̂0, D₁ ≈ h x̂0′ and
    D₂ ≈ ½h² x̂0″ in the SDE step above."""
    return -math.expm1(-2 * h), 2 * h * phi(2, -2 * h), 4 * h * phi(3, -2 * h)


class SDEDPMSolver(FewStepSolver):
    """SDE-DPM-Solver++(``order``M): one evaluation and one N(0, I) draw a step; ``order`` is the
    order of its drift's quadrature (1 = DDIM η = 1)."""

    order: float = 2
    stochastic = True

    def __init__(
        self,
        *shared: Any,
        order: int = 2,
        variant: SecondOrder | str = SecondOrder.MIDPOINT,
        lower_order_final: bool = True,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.order = check_choice("order", order, ORDERS)
        self.variant = check_enum("variant", variant, SecondOrder)
        self.lower_order_final = check_flag("lower_order_final", lower_order_final)
        self._check_final_step(final_step)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        m0 = ctx.x0(x, t)
        if s == 0.0:  # final_step='zero': σ_s = 0, e^{−h} = 0
            return m0
        sigma_t, gamma_s, sigma_s = ctx.sigma(t), ctx.gamma(s), ctx.sigma(s)
        lam_t = half_log_snr(ctx.gamma(t), sigma_t)
        h = half_log_snr(gamma_s, sigma_s) - lam_t
        history = ctx.memory.setdefault("history", [])  # [(λ, x̂0)] before t, newest last
        order = min(self.order, len(history) + 1)
        if self.lower_order_final:
            order = min(order, ctx.steps_left)
        w0, w1, w2 = sde_weights(h)
        drift = w0 * m0
        if order >= 2:
            lam1, m1 = history[-1]
            d1_0 = (m0 - m1) / ((lam_t - lam1) / h)
        if order == 2:
            drift = drift + (0.5 * w0 if self.variant is SecondOrder.MIDPOINT else w1) * d1_0
        elif order == 3:
            lam2, m2 = history[-2]
            r0, r1 = (lam_t - lam1) / h, (lam1 - lam2) / h
            d1_1 = (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            drift = drift + w1 * d1 + w2 * (d1_0 - d1_1) / (r0 + r1)
        history.append((lam_t, m0))
        del history[: -max(self.order - 1, 1)]
        x_s = (sigma_s / sigma_t) * math.exp(-h) * x + gamma_s * drift
        return x_s + sigma_s * math.sqrt(-math.expm1(-2 * h)) * ctx.noise(x)
