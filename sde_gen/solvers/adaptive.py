"""Error-controlled exponential integrators in λ = log(γ_t/σ_t) on the data prediction x̂0.

Each attempt λ → λ + h gives a pair (x_low, x_high) of orders (q, q + 1) sharing evaluations; the
error norm and the step controller are ``step_control.py``'s. The step is accepted (x ← x_high)
when E ≤ 1.

- ``AdaptiveDPM``: DPM-Solver-12 / 23 (Lu et al. 2022a, §4 "adaptive step size", Alg. 4) in its
  data-prediction form: singlestep, intermediate points λ + ½h (12) or λ + ⅓h, λ + ⅔h (23),
  order − 1 new evaluations an attempt, plus x̂0 at each new start (reused after a rejection).
- ``AdaptiveUniPC``: variable-step multistep UniP-p / UniC-p (``unipc.py``): the predictor x̃ and
  its correction by the evaluation at the new point are the pair; one evaluation an attempt,
  reused as the next step's x̂0 when accepted.

``final_step='zero'`` (default): from t_min the last step to t = 0 integrates the flow in the EDM
variables, dx̃/dσ̃ = ε̂ (x̃ = x/γ, σ̃ = σ/γ), over [σ̃_t, 0] with ε̂ linear in σ̃ through the last
two evaluations (σ̃_p, ε̂_p), (σ̃_t, ε̂_t) (a variable-step Adams–Bashforth-2 step):

    x_0 = x̃_t − σ̃_t ε̂_t + ½ σ̃_t² (ε̂_t − ε̂_p)/(σ̃_t − σ̃_p),   ε̂ = (x − γ x̂0)/σ,

exact when ε̂ is linear in σ̃ on [0, σ̃_p]: for a point mass ε̂ is constant → x_0 = x̂0 (Tweedie's
step x̃_t − σ̃_t ε̂_t, what the one-evaluation form gives); for a smooth density ε̂ = −σ̃ ∇log p +
O(σ̃³), and Tweedie's step errs by ½ σ̃_t² |∇log p| (the size of the t_min floor itself) where this
one errs by O(σ̃_t² σ̃_p²) (tests/test_adaptive.py). With t_min = 1e-3 on the DDPM chain
(σ̃_t = 0.01) that leaves ≈ 2e-6 on data=ring (std 0.15), 1.5e-5 on mixture2d and 5e-5 on
mixture64 (stds down to 0.05); a smaller t_min lowers it as σ̃_t⁴. UniPC's evaluation at t_min is
free (its last attempt's, at the predicted point); DPM-Solver-12/23 spends one at (x, t_min).

The step to t = 0 is error-controlled like every other step: its embedded estimate is the
difference from the third-order step through the last three evaluations (ε̂ quadratic in σ̃,
``step_to_zero(..., order=3)``), measured by the same norm and tolerance. Where it exceeds 1 the
integration goes on below t_min, to the σ̃ that estimate asks for (σ̃ · (θ/E)^{1/3}, the estimate
being O(σ̃³)), never below ``t_floor``, and tries again; ``t_floor = t_min`` turns this off. So a
tight tolerance is not held up by the t_min floor, and a loose one costs nothing more.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.solvers.base import FinalStep, Solver, StepContext
from sde_gen.solvers.exponential import exponential_step, half_log_snr
from sde_gen.solvers.options import check_enum
from sde_gen.solvers.pf_ode import _check_tol
from sde_gen.solvers.step_control import Norm, error_norm, next_step
from sde_gen.solvers.unipc import UniPC, Variant

__all__ = ["AdaptiveDPM", "AdaptiveUniPC", "Norm"]

Evaluation = tuple[float, Tensor, Tensor]  # (t, x, x̂0(x, t))


def t_of_lambda(sde: SDE, lam: float) -> float:
    """t with ½ log-SNR λ (``sde.t_from_log_snr``)."""
    return float(sde.t_from_log_snr(torch.tensor([2 * lam], dtype=torch.float64))[0])


def step_to_zero(
    ctx: StepContext, x: Tensor, t: float, evals: list[Evaluation], order: int = 2
) -> Tensor:
    """x̃_0 = x̃_t − ∫_0^{σ̃_t} ε̂ dσ̃ with ε̂ the Newton polynomial in σ̃ through the last ``order``
    evaluations (the newest at t; fewer if fewer are kept): order 1 is Tweedie's x̃_t − σ̃_t ε̂_t,
    order 2 adds ½ σ̃_t² D₁ (module doc), order 3 adds D₂ (σ̃_t³/6 − σ̃_t² σ̃_p/2), D₁ and D₂ the
    first and second divided differences of ε̂ in σ̃."""

    def scaled(u: float, x_u: Tensor, m_u: Tensor) -> tuple[float, Tensor]:
        gamma, sigma = ctx.gamma(u), ctx.sigma(u)
        return sigma / gamma, (x_u - gamma * m_u) / sigma

    points = [scaled(*e) for e in evals[-min(order, len(evals)) :][::-1]]  # newest first
    (sig_t, eps_t), x_0 = points[0], x / ctx.gamma(t)
    x_0 = x_0 - sig_t * eps_t
    if len(points) > 1:
        sig_p, eps_p = points[1]
        d1 = (eps_t - eps_p) / (sig_t - sig_p)
        x_0 = x_0 + 0.5 * sig_t**2 * d1
    if len(points) > 2:
        sig_q, eps_q = points[2]
        d2 = (d1 - (eps_p - eps_q) / (sig_p - sig_q)) / (sig_t - sig_q)
        x_0 = x_0 + (sig_t**3 / 6 - 0.5 * sig_t**2 * sig_p) * d2
    return x_0


class ErrorControlled(Solver):
    """The accept/reject loop in λ from T to t_min, then the ``final_step``; subclasses write
    ``attempt`` and evaluate x̂0 through ``evaluate`` (remembered for the step to t = 0)."""

    stochastic = False
    evals_per_step = None
    adaptive = True

    def __init__(
        self,
        rtol: float = 1e-4,
        atol: float = 1e-4,
        norm: Norm | str = Norm.RMS,
        h_init: float = 0.1,
        h_max: float = 1.0,
        theta: float = 0.9,
        shrink: float = 0.2,
        growth: float = 5.0,
        final_step: FinalStep | str = FinalStep.ZERO,
        t_min: float = 1e-3,
        t_floor: float = 1e-4,
        denoise_final: bool = False,
        progress: bool = False,
    ):
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        if not (isinstance(t_floor, int | float) and 0 < t_floor <= t_min):
            raise ValueError(f"t_floor={t_floor} must lie in (0, t_min={t_min}]")
        self.t_floor = float(t_floor)
        self.rtol, self.atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
        self.h_init = _check_tol("h_init", h_init)
        self.h_max = _check_tol("h_max", h_max)
        if not (isinstance(theta, int | float) and 0 < theta <= 1):
            raise ValueError(f"theta={theta} must lie in (0, 1]")
        if not (isinstance(shrink, int | float) and 0 < shrink < 1):
            raise ValueError(f"shrink={shrink} must lie in (0, 1)")
        if not (isinstance(growth, int | float) and growth > 1):
            raise ValueError(f"growth={growth} must be > 1")
        self.norm = check_enum("norm", norm, Norm)
        self.theta, self.shrink, self.growth = float(theta), float(shrink), float(growth)
        self._check_final_step(final_step)
        if self.final_step is FinalStep.ZERO_FROM_T_MIN:
            raise ValueError(
                "final_step='zero_from_t_min' places a fixed grid's last evaluation; an adaptive "
                "solver reaches t_min anyway: use final_step='zero' or 't_min'"
            )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def options(self) -> dict[str, Any]:
        keys = (
            "rtol",
            "atol",
            "norm",
            "h_init",
            "h_max",
            "theta",
            "shrink",
            "growth",
            "final_step",
        )
        return {k: getattr(self, k) for k in (*keys, "t_min", "t_floor", "denoise_final")}

    def evaluate(self, ctx: StepContext, x: Tensor, t: float) -> Tensor:
        """x̂0(x, t): one score evaluation, remembered in ``ctx.memory['evals']``."""
        m = ctx.x0(x, t)
        evals = ctx.memory.setdefault("evals", [])
        evals.append((t, x, m))
        del evals[:-4]
        return m

    def integrate(self, sde, score, x_T, generator, keep, record):
        ctx = StepContext(
            sde, score, generator, torch.tensor([sde.T, self.t_min], dtype=torch.float64), 0
        )
        t, x, h = sde.T, x_T, self.h_init
        x_prev = x_T / ctx.gamma(t)  # x̃_low of the last accepted attempt
        lam, lam_end, lam_floor = (
            half_log_snr(ctx.gamma(u), ctx.sigma(u)) for u in (sde.T, self.t_min, self.t_floor)
        )
        t_end = self.t_min
        keep(t, x)
        while True:
            x, t, x_prev, lam, h = self.run_to(ctx, x, t, x_prev, lam, h, lam_end, t_end, keep)
            if not self.ends_at_zero:
                return x, ctx.memory["steps_log"]
            x_0, err = self.end_estimate(ctx, x, t, x_prev)
            if err <= 1.0 or lam_end >= lam_floor - 1e-12:
                keep(0.0, x_0)
                return x_0, ctx.memory["steps_log"]
            lam_end = min(lam_floor, lam + max(math.log(err / self.theta) / 3, 1e-3))
            t_end = self.t_floor if lam_end >= lam_floor else t_of_lambda(sde, lam_end)

    def run_to(
        self,
        ctx: StepContext,
        x: Tensor,
        t: float,
        x_prev: Tensor,
        lam: float,
        h: float,
        lam_end: float,
        t_end: float,
        keep: Callable[[float, Tensor], None],
    ) -> tuple[Tensor, float, Tensor, float, float]:
        """The accept/reject loop from (x, t) to t_end (λ = lam_end), each attempt logged in
        ``ctx.memory['steps_log']``; returns (x, t, x̃_low, λ) at t_end and the next step size."""
        steps_log = ctx.memory.setdefault("steps_log", [])
        while lam_end - lam > 1e-12:
            h = min(h, self.h_max, lam_end - lam)
            s = t_end if lam_end - lam - h <= 1e-12 else t_of_lambda(ctx.sde, lam + h)
            x_low, x_high, q = self.attempt(ctx, x, t, s)
            gamma_s = ctx.gamma(s)
            err = error_norm(
                x_low / gamma_s, x_high / gamma_s, x_prev, self.rtol, self.atol, self.norm
            )
            steps_log.append((t, h, err <= 1.0))
            if err <= 1.0:
                self.accept(ctx, s)
                t, x, x_prev, lam = s, x_high, x_low / gamma_s, half_log_snr(gamma_s, ctx.sigma(s))
                keep(t, x)
            else:  # forget the rejected attempt's evaluations (those after t)
                evals = ctx.memory.get("evals", [])
                evals[:] = [e for e in evals if e[0] >= t]
            h = next_step(h, err, q, self.theta, self.shrink, self.growth)
        return x, t, x_prev, lam, h

    def end_estimate(
        self, ctx: StepContext, x: Tensor, t: float, x_prev: Tensor
    ) -> tuple[Tensor, float]:
        """(x̃_0, E): the second-order step to t = 0 and its error norm against the third-order
        one (module doc); E = 0 while fewer than three evaluations are kept."""
        evals = ctx.memory["evals"]
        if evals[-1][0] != t:
            self.evaluate_start(ctx, x, t)
        x_0 = step_to_zero(ctx, x, t, evals)
        if len(evals) < 3:
            return x_0, 0.0
        x_3 = step_to_zero(ctx, x, t, evals, order=3)
        return x_0, error_norm(x_0, x_3, x_prev, self.rtol, self.atol, self.norm)

    def evaluate_start(self, ctx: StepContext, x: Tensor, t: float) -> Tensor:
        """x̂0 at an accepted point (x, t); DPM-Solver keeps it as the next attempt's start."""
        return self.evaluate(ctx, x, t)

    @abstractmethod
    def attempt(
        self, ctx: StepContext, x: Tensor, t: float, s: float
    ) -> tuple[Tensor, Tensor, int]:
        """(x_low, x_high, q): results of orders q and q + 1 at s from x at t."""

    def accept(self, ctx: StepContext, s: float) -> None:
        """Keep what the accepted attempt to s leaves for the next one (``ctx.memory``)."""


class AdaptiveDPM(ErrorControlled):
    """DPM-Solver-12 (``order=2``) or -23 (``order=3``), data prediction, error-controlled."""

    order: float = 3

    def __init__(self, order: int = 3, **options: Any):
        super().__init__(**options)
        if isinstance(order, bool) or order not in (2, 3):
            raise ValueError(f"order={order!r} is not one of (2, 3)")
        self.order = order

    def options(self) -> dict[str, Any]:
        return {"order": self.order, **super().options()}

    def evaluate_start(self, ctx, x, t):
        m = ctx.memory
        if m.get("t") != t:
            m.update(t=t, m0=self.evaluate(ctx, x, t))
        return m["m0"]

    def attempt(self, ctx, x, t, s):
        m0, lam_t = self.evaluate_start(ctx, x, t), half_log_snr(ctx.gamma(t), ctx.sigma(t))
        h = half_log_snr(ctx.gamma(s), ctx.sigma(s)) - lam_t
        rs = (0.5,) if self.order == 2 else (1 / 3, 2 / 3)
        mids = [t_of_lambda(ctx.sde, lam_t + r * h) for r in rs]
        first = exponential_step(ctx, x, t, s, m0, [])
        u1 = exponential_step(ctx, x, t, mids[0], m0, [])
        point1 = (lam_t + rs[0] * h, self.evaluate(ctx, u1, mids[0]))
        if self.order == 2:
            return first, exponential_step(ctx, x, t, s, m0, [point1]), 1
        u2 = exponential_step(ctx, x, t, mids[1], m0, [point1])
        point2 = (lam_t + rs[1] * h, self.evaluate(ctx, u2, mids[1]))
        second = exponential_step(ctx, x, t, s, m0, [point1])
        return second, exponential_step(ctx, x, t, s, m0, [point2]), 2


class AdaptiveUniPC(ErrorControlled):
    """Variable-step UniPC-p (``order`` p = 1 … 3, ``variant`` bh1 | bh2): x_low = UniP-q,
    x_high = UniC-q (q ≤ p, lower while the history fills); declared order p + 1."""

    order: float = 4

    def __init__(self, order: int = 3, variant: Variant | str = Variant.BH2, **options: Any):
        super().__init__(**options)
        self.unipc = UniPC(order=order, variant=variant)
        self.predictor_order, self.variant = order, self.unipc.variant
        self.order = order + 1

    def options(self) -> dict[str, Any]:
        return {"order": self.predictor_order, "variant": self.variant, **super().options()}

    def attempt(self, ctx, x, t, s):
        m = ctx.memory
        history = m.setdefault("history", [])  # [(λ, x̂0)] up to t, newest last
        if not history:
            history.append((half_log_snr(ctx.gamma(t), ctx.sigma(t)), self.evaluate(ctx, x, t)))
        q = min(self.predictor_order, len(history))
        earlier, m0 = history[len(history) - q : -1], history[-1][1]
        x_pred = self.unipc.exponential_step(ctx, x, t, s, m0, earlier)
        new = (half_log_snr(ctx.gamma(s), ctx.sigma(s)), self.evaluate(ctx, x_pred, s))
        m["new"] = new
        return x_pred, self.unipc.exponential_step(ctx, x, t, s, m0, [*earlier, new]), q

    def accept(self, ctx, s):
        history = ctx.memory["history"]
        history.append(ctx.memory.pop("new"))
        del history[: -self.predictor_order]
