"""SA-Solver (Xue et al. 2023, eq. 14 and Alg. 1): stochastic Adams predictor–corrector on the
data prediction x̂0 in λ = log(γ_t/σ_t), for the family of reverse SDEs with noise scale τ:

    x_s = (σ_s/σ_t) e^{−τ²h} x_t + γ_s Σ_j b_j x̂0_j + σ_s √(1 − e^{−2τ²h}) z,
    b_j = ∫_{λ_t}^{λ_s} a e^{−a(λ_s − λ)} ℓ_j(λ) dλ,   a = 1 + τ²,  h = λ_s − λ_t,

ℓ_j the Lagrange basis on the nodes λ_j. With u = (λ − λ_t)/h and ℓ_j = Σ_m c_jm u^m,
b_j = Σ_m c_jm a h m! φ_{m+1}(−ah). τ = 0 is DPM-Solver++, τ = 1 SDE-DPM-Solver++.

The predictor (SA-Predictor) uses the last ``predictor_order`` x̂0; the corrector (SA-Corrector)
redoes the step t_prev → t with the x̂0 just evaluated at t added, the same z and τ, before the
next predictor (one evaluation a step; no corrector after the last evaluation). With two nodes
the reference code weights the linear term by a h²/2 (∫ a u du, the exponential dropped) instead
of its exact (ah − 1 + e^{−ah})/a; ``crude_order_two`` (default, as the peer) does the same.
τ(t) = ``tau`` for t in [``tau_from``, ``tau_to``], else 0 (the reference's window on 200–800 of
1000 steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext, check_int
from sde_gen.solvers.exponential import half_log_snr, phi
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_flag, check_non_negative

__all__ = ["SASolver", "sa_weights"]


def sa_weights(lams: list[float], lam_t: float, lam_s: float, a: float, crude: bool) -> list[float]:
    """b_j for the nodes ``lams`` (above); ``crude`` with two nodes: the linear moment a h/2."""
    h = lam_s - lam_t
    u = np.array([(lam - lam_t) / h for lam in lams])
    moments = [a * h * math.factorial(m) * phi(m + 1, -a * h) for m in range(len(lams))]
    if crude and len(lams) == 2:
        moments[1] = a * h / 2
    vandermonde = u[:, None] ** np.arange(len(lams))[None, :]
    return np.linalg.solve(vandermonde.T, np.array(moments)).tolist()


class SASolver(FewStepSolver):
    """SA-Predictor of ``predictor_order`` p with SA-Corrector of ``corrector_order`` c (0: none);
    stochastic where τ > 0; declared order (of the τ = 0 solver): min(c, p + 1), p without
    corrector (the predictor's error enters the corrector through a weight O(h))."""

    order: float = 3
    stochastic = True

    def __init__(
        self,
        *shared: Any,
        predictor_order: int = 2,
        corrector_order: int = 2,
        tau: float = 1.0,
        tau_from: float = 0.2,
        tau_to: float = 0.8,
        crude_order_two: bool = True,
        lower_order_final: bool = True,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.predictor_order = check_int("predictor_order", predictor_order, 1)
        self.corrector_order = check_int("corrector_order", corrector_order, 0)
        if predictor_order > 4 or corrector_order > 4:
            raise ValueError(f"orders {predictor_order}, {corrector_order} must be <= 4")
        self.tau = check_non_negative("tau", tau)
        if not tau_from <= tau_to:
            raise ValueError(f"tau_from={tau_from} must be <= tau_to={tau_to}")
        self.tau_from, self.tau_to = float(tau_from), float(tau_to)
        self.crude_order_two = check_flag("crude_order_two", crude_order_two)
        self.lower_order_final = check_flag("lower_order_final", lower_order_final)
        self.order = (
            min(corrector_order, predictor_order + 1) if corrector_order else predictor_order
        )
        self.stochastic = self.tau > 0
        self._check_final_step(final_step)

    def tau_at(self, t: float) -> float:
        """τ(t): ``tau`` inside [tau_from, tau_to], else 0."""
        return self.tau if self.tau_from <= t <= self.tau_to else 0.0

    def update(
        self,
        ctx: StepContext,
        x: Tensor,
        t: float,
        s: float,
        points: list[tuple[float, Tensor]],
        tau: float,
        z: Tensor,
    ) -> Tensor:
        """The SA step t → s from x with the x̂0 ``points`` [(λ_j, m_j)] (eq. 14)."""
        lam_t = half_log_snr(ctx.gamma(t), ctx.sigma(t))
        gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
        h = half_log_snr(gamma_s, sigma_s) - lam_t
        lams = [lam for lam, _ in points]
        weights = sa_weights(lams, lam_t, lam_t + h, 1 + tau**2, self.crude_order_two)
        x_s = (sigma_s / ctx.sigma(t)) * math.exp(-(tau**2) * h) * x
        for b_j, (_, m_j) in zip(weights, points, strict=True):
            x_s = x_s + gamma_s * b_j * m_j
        if tau > 0:
            x_s = x_s + sigma_s * math.sqrt(-math.expm1(-2 * tau**2 * h)) * z
        return x_s

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        memory = ctx.memory
        history = memory.setdefault("history", [])  # [(λ, x̂0)], newest last
        m = ctx.x0(x, t)
        lam_t = half_log_snr(ctx.gamma(t), ctx.sigma(t))
        last = memory.get("last")
        if last is not None and last["order"] > 0:  # SA-Corrector of the step t_prev → t
            points = [*history[len(history) - last["order"] + 1 :], (lam_t, m)]
            x = self.update(ctx, last["x"], last["t"], t, points[::-1], last["tau"], last["z"])
        if s == 0.0:  # final_step='zero': x̂0 of the last evaluation
            return m
        left = ctx.steps_left
        p = min(self.predictor_order, len(history) + 1)
        c = min(self.corrector_order, len(history) + 2)
        if self.lower_order_final:
            p, c = min(p, left), min(c, left + 1)
        points = [(lam_t, m), *history[::-1][: p - 1]]
        tau, z = self.tau_at(t), ctx.noise(x)
        memory["last"] = {"x": x, "t": t, "z": z, "tau": tau, "order": c}
        history.append((lam_t, m))
        del history[: -max(self.predictor_order, self.corrector_order - 1, 1)]
        return self.update(ctx, x, t, s, points, tau, z)
