"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p on the data
prediction x̂0 in λ = log(γ_t/σ_t), for any SDE of the contract (through γ_t, σ_t).

A step t → s, h = λ_s − λ_t, uses m₀ = x̂0 at t and x̂0 at earlier times λ_k with
r_k = (λ_k − λ_t)/h < 0 and D_k = x̂0(λ_k) − m₀:

    UniP:  x̃_s = (σ_s/σ_t) x_t + γ_s (1 − e^{−h}) m₀ + γ_s Σ_k w_k D_k/r_k.

When x̂0 at s is evaluated (by the next step, so one evaluation a step), UniC re-does the step
with that point added, r = 1, D = x̂0(x̃_s, s) − m₀, and the next step starts from the corrected x.
Since D_k/r_k = Σ_{j≥1} r_k^{j−1} h^j x̂0^{(j)}/j!, matching the expansion of the exact solution
(``exponential.py``) to order n asks Σ_k w_k r_k^{j−1} = c_j = j! h φ_{j+1}(−h), j = 1 … n: the
paper's system R a = g/B(h) with w = B(h) a. A 1 × 1 system takes its small-h limit a = ½, so
w = B(h)/2 with B(h) = h (``bh1``) or 1 − e^{−h} (``bh2``); larger ones are solved exactly (B
cancels). UniP with q points has order q, UniC order q + 1; UniP-2 with bh2 is DPM-Solver++(2M).

With ``final_step='zero'`` (default) the last step returns x̂0 of the last evaluation and the
step before it has order ≤ 2 (``lower_order_final``); no corrector follows the last evaluation.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, ClassVar

from torch import Tensor

from sde_gen.solvers.base import FinalStep, StepContext
from sde_gen.solvers.exponential import exact_weights, exponential_step, half_log_snr
from sde_gen.solvers.few_step import FewStepSolver
from sde_gen.solvers.options import check_choice, check_enum, check_flag

__all__ = ["UniPC", "Variant"]

ORDERS = (1, 2, 3)


class Variant(str, Enum):
    """B(h) of UniPC: ``bh1`` B(h) = h, ``bh2`` B(h) = 1 − e^{−h}."""

    BH1 = "bh1"
    BH2 = "bh2"

    def __repr__(self) -> str:
        return repr(self.value)

    def B(self, h: float) -> float:  # noqa: N802 (the paper's name)
        return h if self is Variant.BH1 else -math.expm1(-h)


class UniPC(FewStepSolver):
    """UniPC-p with ``order`` p (predictor order, diffusers' ``solver_order``): one evaluation a
    step; the declared convergence ``order`` is p + 1 with the ``corrector``, p without."""

    order: float = 3
    option_attributes: ClassVar[dict[str, str]] = {"order": "predictor_order"}

    def __init__(
        self,
        *shared: Any,
        order: int = 2,
        variant: Variant | str = Variant.BH2,
        corrector: bool = True,
        final_step: FinalStep | str = FinalStep.ZERO,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.predictor_order = check_choice("order", order, ORDERS)
        self.variant = check_enum("variant", variant, Variant)
        self.corrector = check_flag("corrector", corrector)
        self.order = order + int(corrector)
        self._check_final_step(final_step)

    def weights(self, r: list[float], h: float) -> list[float]:
        """The exact weights (``exponential.exact_weights``); w = B(h)/2 for one point."""
        return [0.5 * self.variant.B(h)] if len(r) == 1 else exact_weights(r, h)

    def exponential_step(self, ctx, x, t, s, m0, points) -> Tensor:
        """``exponential.exponential_step`` with UniPC's weights."""
        return exponential_step(ctx, x, t, s, m0, points, self.weights)

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        m0 = ctx.x0(x, t)
        memory = ctx.memory
        history = memory.setdefault("history", [])  # [(λ, x̂0)] before t, newest last
        lam_t = half_log_snr(ctx.gamma(t), ctx.sigma(t))
        if s == 0.0:  # final_step='zero': σ_s = 0; no corrector after the last evaluation
            return m0
        if self.corrector and history:  # UniC for the step t_prev → t, with x̂0 at t
            t_prev, x_prev, q = memory["t_prev"], memory["x_prev"], memory["order_prev"]
            earlier = history[-q:-1] if q > 1 else []
            x = self.exponential_step(
                ctx, x_prev, t_prev, t, history[-1][1], [*earlier, (lam_t, m0)]
            )
        order = min(self.predictor_order, len(history) + 1)
        if self.ends_at_zero:
            order = min(order, ctx.steps_left)
        earlier = history[len(history) - order + 1 :] if order > 1 else []
        x_s = self.exponential_step(ctx, x, t, s, m0, earlier)
        memory.update(t_prev=t, x_prev=x, order_prev=order)
        history.append((lam_t, m0))
        del history[: -self.predictor_order]
        return x_s
