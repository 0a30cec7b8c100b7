"""Euler–Maruyama on the reverse-time SDE dx = [f(t) x − g(t)² ∇log q_t(x)] dt + g(t) dw̄
(Anderson 1982; survey §4.3)."""

from __future__ import annotations

import math

from torch import Tensor

from sde_gen.sde.conversions import drift
from sde_gen.solvers.base import FixedStepSolver, StepContext

__all__ = ["EulerMaruyama", "euler_maruyama_step"]


def euler_maruyama_step(ctx: StepContext, x: Tensor, t: float, s: float, noise: bool = True):
    """x_s = x_t − [f x_t − g² s_θ(x_t, t)] h + g √h z, h = t − s > 0."""
    h, g2 = t - s, ctx.g2(t)
    x = x - drift(x, ctx.score(x, t), ctx.f(t), g2, 1.0) * h
    return x + math.sqrt(g2 * h) * ctx.noise(x) if noise else x


class EulerMaruyama(FixedStepSolver):
    """Euler–Maruyama on the reverse SDE; one score evaluation per step."""

    order = 1.0
    stochastic = True
    evals_per_step = 1

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        return euler_maruyama_step(ctx, x, t, s)
