"""Pseudo numerical methods (Liu et al. 2022, PNDM): a linear multistep rule on ε̂ inside the
DDIM transfer, in EDM variables x̃ = x/γ_t, ρ = σ_t/γ_t:

    x̃_s = x̃_t + (ρ_s − ρ_t) ε′,    ε′ = Σ_j b_j ε̂_{t_j}   (Liu et al. eq. 9 and 12),

b the Adams–Bashforth weights for equal steps on the last ``order`` ε̂ (newest first). The
``start`` of the history:

* ``euler`` — iPNDM (Zhang & Chen 2022, App. "improved PNDM"): orders 1, 2, 3 … as ε̂ come in;
* ``heun`` — PLMS: the first step is the pseudo improved Euler ε′ = (ε̂_t + ε̂(x̃′_s, s))/2 with
  x̃′_s its Euler prediction, and the next step evaluates ε̂ at the corrected x_s again (+1 NFE);
* ``runge_kutta`` — PNDM: the first three steps are pseudo Runge–Kutta (eq. 13), four ε̂ each at
  t, the midpoint m = (t + s)/2 twice and s: ε′ = (ε₁ + 2ε₂ + 2ε₃ + ε₄)/6.

The weights b assume equal steps in ρ: on a grid uniform in ρ (``KarrasGrid(rho=1)``) the rule
is Adams–Bashforth of order ``order`` (its start aside); on any other grid the unequal steps leave
a local O(h³) error, so the declared convergence order is min(``order``, 2).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

from torch import Tensor

from sde_gen.solvers.base import FinalStep, FixedStepSolver, StepContext
from sde_gen.solvers.options import check_choice, check_enum

__all__ = ["PNDM", "Start", "ADAMS_BASHFORTH"]

#: Adams–Bashforth weights for equal steps, newest value first (orders 1–4)
ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
ORDERS = (1, 2, 3, 4)
RUNGE_KUTTA_STEPS = 3


class Start(str, Enum):
    """How the ε̂ history starts: ``euler`` (iPNDM), ``heun`` (PLMS), ``runge_kutta`` (PNDM)."""

    EULER = "euler"
    HEUN = "heun"
    RUNGE_KUTTA = "runge_kutta"

    def __repr__(self) -> str:
        return repr(self.value)


def transfer(ctx: StepContext, x: Tensor, t: float, s: float, eps: Tensor) -> Tensor:
    """The DDIM transfer φ(x_t, ε, t, s) = γ_s (x/γ_t + (ρ_s − ρ_t) ε) (Liu et al. eq. 9)."""
    gamma_t, gamma_s = ctx.gamma(t), ctx.gamma(s)
    rho_t, rho_s = ctx.sigma(t) / gamma_t, ctx.sigma(s) / gamma_s
    return gamma_s * (x / gamma_t + (rho_s - rho_t) * eps)


class PNDM(FixedStepSolver):
    """Adams–Bashforth of ``order`` ≤ 4 on ε̂ in the DDIM transfer (declared order
    min(``order``, 2), see above); nfe = steps (``euler``),
    steps + 1 (``heun``), steps + 3·min(3, steps) (``runge_kutta``)."""

    order: float = 2
    stochastic = False
    evals_per_step = 1
    default_steps = 20
    option_attributes: ClassVar[dict[str, str]] = {"order": "ab_order"}

    def __init__(
        self,
        *shared: Any,
        order: int = 4,
        start: Start | str = Start.EULER,
        final_step: FinalStep | str = FinalStep.T_MIN,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.ab_order = check_choice("order", order, ORDERS)
        self.start = check_enum("start", start, Start)
        self.order = min(order, 2)
        self._check_final_step(final_step)

    def expected_nfe(self) -> int:
        extra = {Start.EULER: 0, Start.HEUN: 1, Start.RUNGE_KUTTA: 3 * min(3, self.steps)}
        return super().expected_nfe() + extra[self.start]

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        history = ctx.memory.setdefault("eps", [])  # ε̂ at the steps' start, newest first
        eps = ctx.eps(x, t)
        history.insert(0, eps)
        del history[self.ab_order :]
        if self.start is Start.HEUN and ctx.index == 0:
            eps_s = ctx.eps(transfer(ctx, x, t, s, eps), s)
            return transfer(ctx, x, t, s, 0.5 * (eps + eps_s))
        if self.start is Start.RUNGE_KUTTA and ctx.index < RUNGE_KUTTA_STEPS:
            return transfer(ctx, x, t, s, self.runge_kutta(ctx, x, t, s, eps))
        weights = ADAMS_BASHFORTH[len(history) - 1]
        eps_prime = sum(b * e for b, e in zip(weights, history, strict=True))
        return transfer(ctx, x, t, s, eps_prime)

    @staticmethod
    def runge_kutta(ctx: StepContext, x: Tensor, t: float, s: float, e1: Tensor) -> Tensor:
        """ε′ of the pseudo Runge–Kutta step (Liu et al. eq. 13), midpoint m = (t + s)/2."""
        m = 0.5 * (t + s)
        e2 = ctx.eps(transfer(ctx, x, t, m, e1), m)
        e3 = ctx.eps(transfer(ctx, x, t, m, e2), m)
        e4 = ctx.eps(transfer(ctx, x, t, s, e3), s)
        return (e1 + 2 * e2 + 2 * e3 + e4) / 6
