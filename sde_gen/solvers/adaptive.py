"""Error-controlled exponential integrators in λ = log(γ_t/σ_t) on the data prediction x̂0.

Each attempt λ → λ + h gives a pair (x_low, x_high) of orders (q, q + 1) sharing evaluations.
The error E = ‖(x_high − x_low)/δ‖, δ = max(atol, rtol · max(|x_high|, |x|)), with ‖·‖ the RMS
per sample, then the max over the batch (``norm: max``, Lu et al. 2022a) or the RMS over the
whole batch (``norm: rms``, the measure of the end-point error); the step is accepted (x ← x_high)
when E ≤ 1, and the next h = h · min(``growth``, θ E^{−1/(q+1)}), clipped to end at t_min.

- ``AdaptiveDPM``: DPM-Solver-12 / 23 (Lu et al. 2022a, §4 "adaptive step size", Alg. 4) in its
  data-prediction form: singlestep, intermediate points λ + ½h (12) or λ + ⅓h, λ + ⅔h (23),
  order − 1 new evaluations an attempt, plus x̂0 at each new start (reused after a rejection).
- ``AdaptiveUniPC``: variable-step multistep UniP-p / UniC-p (``unipc.py``): the predictor x̃ and
  its correction by the evaluation at the new point are the pair; one evaluation an attempt,
  reused as the next step's x̂0 when accepted.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.solvers.base import Solver, StepContext
from sde_gen.solvers.exponential import exponential_step, half_log_snr
from sde_gen.solvers.pf_ode import _check_tol
from sde_gen.solvers.unipc import UniPC, Variant

__all__ = ["AdaptiveDPM", "AdaptiveUniPC"]

NORMS = ("max", "rms")


def t_of_lambda(sde: SDE, lam: float) -> float:
    """t with ½ log-SNR λ (``sde.t_from_log_snr``)."""
    return float(sde.t_from_log_snr(torch.tensor([2 * lam], dtype=torch.float64))[0])


class ErrorControlled(Solver):
    """The accept/reject loop in λ from T to t_min; subclasses write ``attempt``."""

    stochastic = False
    evals_per_step = None
    adaptive = True

    def __init__(
        self,
        rtol: float = 1e-4,
        atol: float = 1e-4,
        h_init: float = 0.1,
        theta: float = 0.9,
        growth: float = 5.0,
        norm: str = "max",
        t_min: float = 1e-3,
        denoise_final: bool = False,
        progress: bool = False,
    ):
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        self.rtol, self.atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
        self.h_init = _check_tol("h_init", h_init)
        if not (isinstance(theta, int | float) and 0 < theta <= 1):
            raise ValueError(f"theta={theta} must lie in (0, 1]")
        if not (isinstance(growth, int | float) and growth > 1):
            raise ValueError(f"growth={growth} must be > 1")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {NORMS}")
        self.theta, self.growth, self.norm = float(theta), float(growth), norm

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def options(self) -> dict[str, Any]:
        keys = ("rtol", "atol", "h_init", "theta", "growth", "norm", "t_min", "denoise_final")
        return {k: getattr(self, k) for k in keys}

    def error(self, x_low: Tensor, x_high: Tensor, x: Tensor) -> float:
        delta = torch.clamp(self.rtol * torch.maximum(x_high.abs(), x.abs()), min=self.atol)
        e2 = ((x_high - x_low) / delta).flatten(1).pow(2)
        return float(e2.mean(1).sqrt().max() if self.norm == "max" else e2.mean().sqrt())

    def integrate(self, sde, score, x_T, generator, keep, record):
        ctx = StepContext(
            sde, score, generator, torch.tensor([sde.T, self.t_min], dtype=torch.float64), 0
        )
        t, x, h, steps_log = sde.T, x_T, self.h_init, []
        lam, lam_end = (half_log_snr(ctx.gamma(u), ctx.sigma(u)) for u in (sde.T, self.t_min))
        keep(t, x)
        while lam_end - lam > 1e-12:
            h = min(h, lam_end - lam)
            s = self.t_min if lam_end - lam - h <= 1e-12 else t_of_lambda(sde, lam + h)
            x_low, x_high, q = self.attempt(ctx, x, t, s)
            err = self.error(x_low, x_high, x)
            steps_log.append((t, h, err <= 1.0))
            if err <= 1.0:
                self.accept(ctx, s)
                t, x, lam = s, x_high, half_log_snr(ctx.gamma(s), ctx.sigma(s))
                keep(t, x)
            h *= min(self.growth, self.theta * max(err, 1e-10) ** (-1.0 / (q + 1)))
        return x, steps_log

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

    def attempt(self, ctx, x, t, s):
        m = ctx.memory
        if m.get("t") != t:
            m.update(t=t, m0=ctx.x0(x, t))
        m0, lam_t = m["m0"], half_log_snr(ctx.gamma(t), ctx.sigma(t))
        h = half_log_snr(ctx.gamma(s), ctx.sigma(s)) - lam_t
        rs = (0.5,) if self.order == 2 else (1 / 3, 2 / 3)
        mids = [t_of_lambda(ctx.sde, lam_t + r * h) for r in rs]
        first = exponential_step(ctx, x, t, s, m0, [])
        u1 = exponential_step(ctx, x, t, mids[0], m0, [])
        point1 = (lam_t + rs[0] * h, ctx.x0(u1, mids[0]))
        if self.order == 2:
            return first, exponential_step(ctx, x, t, s, m0, [point1]), 1
        u2 = exponential_step(ctx, x, t, mids[1], m0, [point1])
        point2 = (lam_t + rs[1] * h, ctx.x0(u2, mids[1]))
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
            history.append((half_log_snr(ctx.gamma(t), ctx.sigma(t)), ctx.x0(x, t)))
        q = min(self.predictor_order, len(history))
        earlier, m0 = history[len(history) - q : -1], history[-1][1]
        x_pred = self.unipc.exponential_step(ctx, x, t, s, m0, earlier)
        new = (half_log_snr(ctx.gamma(s), ctx.sigma(s)), ctx.x0(x_pred, s))
        m["new"] = new
        return x_pred, self.unipc.exponential_step(ctx, x, t, s, m0, [*earlier, new]), q

    def accept(self, ctx, s):
        history = ctx.memory["history"]
        history.append(ctx.memory.pop("new"))
        del history[: -self.predictor_order]
