"""DDPM ancestral sampling (survey Algorithm 2; Ho et al. 2020) on any linear SDE.

Between grid points s < t the chain has α_t = γ_{t|s}², β_t = σ_{t|s}² (``sde.transition``),
and with ε_θ = −σ_t s_θ
x_s = 1/√α_t (x_t − β_t/σ_t ε_θ) + σ z = (x_t + β_t s_θ(x_t, t)) / γ_{t|s} + σ z,
Tweedie's estimate of x_s from x_t = γ_{t|s} x_s + σ_{t|s} z, i.e. the posterior mean of
q(x_s | x_t, x̂0). σ² = β_t (``variance: beta``), β̃_t = σ_{t|s}² σ_s²/σ_t² (``variance:
beta_tilde``, ``sde.posterior``) or the model's own (``variance: learned``): log σ² from the
network's extra output by the model's convention (``models.learned_variance``: iDDPM's
interpolation between log β_t and log β̃_t, or Σ itself), on any grid with the step's own β_t and
β̃_t as iDDPM's respacing does.

With ``clip_x0`` = [a, b] the mean is written as the posterior mean a_t x_t + b_t x̂0 (``SDE.
posterior``) with x̂0 clamped to [a, b] at every step (improved-diffusion's ``clip_denoised``). A
big step from where γ_t ≈ 0 (the cosine chain's t = T: γ_T ≈ 5e-5) multiplies the network's ε
error by σ²_{t|s}/(σ_t γ_{t|s}), hundreds on a 100-step chain; the clamp bounds what reaches x_s.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.base import finite_float
from sde_gen.sde.conversions import score_from_eps, x0_from_score
from sde_gen.solvers.base import FixedStepSolver, StepContext
from sde_gen.solvers.first_eval import FirstEval

__all__ = ["Ancestral", "Variance", "check_range"]


def check_range(key: str, value: Any) -> tuple[float, float]:
    """``value`` as an interval [a, b] of finite numbers with a < b (ValueError naming ``key``)."""
    try:
        a, b = (finite_float(key, v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} must be two finite numbers [a, b]") from None
    if not a < b:
        raise ValueError(f"{key}={[a, b]} must have a < b")
    return a, b


class Variance(str, Enum):
    """σ² of a step t → s (option ``variance``): β = σ²_{t|s}, β̃ = σ²_{t|s} σ_s²/σ_t², or
    ``learned`` (the model's Σ_θ read by its ``variance`` convention, e.g. Nichol & Dhariwal
    2021, eq. 15: needs a model with a learned variance)."""

    BETA = "beta"
    BETA_TILDE = "beta_tilde"
    LEARNED = "learned"

    def __repr__(self) -> str:
        return repr(self.value)


class Ancestral(FixedStepSolver):
    """Algorithm 2 with ``steps`` score evaluations. With ``denoise_final`` (default): ``steps − 1``
    noisy steps on the grid from T to t_min, then the noiseless last step t_min → 0 (which is
    Tweedie's x̂0, so no extra evaluation). Without: ``steps`` steps from T to t_min, the last one
    noiseless, returning x at t_min.

    With ``DiscreteVPSDE`` of N betas, ``steps=N``, ``t_min=1/N`` and the uniform grid the times
    are t_i = i/N and this is the DDPM chain exactly.
    """

    order = 1.0
    stochastic = True
    evals_per_step = 1
    ends_at_zero = True

    default_steps = 1000
    default_denoise_final = True

    def __init__(
        self,
        *shared: Any,
        variance: Variance | str = Variance.BETA,
        clip_x0: tuple[float, float] | None = None,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.clip_x0 = None if clip_x0 is None else check_range("clip_x0", clip_x0)
        try:
            self.variance = Variance(variance)
        except ValueError:
            choices = tuple(v.value for v in Variance)
            raise ValueError(f"variance={variance!r} is not one of {choices}") from None
        if self.variance is Variance.LEARNED and self.first_eval is FirstEval.PRIOR_MEAN:
            raise ValueError(
                "variance='learned' reads the model's variance output at T, which "
                "first_eval='prior_mean' does not evaluate: use first_eval='model'"
            )

    def time_grid(self, sde: SDE) -> Tensor:
        if not self.denoise_final:
            return self.grid(sde, self.steps, self.t_min)
        if self.steps == 1:
            return torch.tensor([sde.T, 0.0], dtype=torch.float64)
        grid = self.grid(sde, self.steps - 1, self.t_min)
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        gamma_ts, beta = ctx.transition(t, s)
        if self.variance is Variance.LEARNED:
            eps, v = ctx.score.eps_and_extra(x, t)
            score = score_from_eps(eps, ctx.sigma(t))
        else:
            score, v = ctx.score(x, t), None
        if self.clip_x0 is None:
            mean = x0_from_score(x, score, gamma_ts, math.sqrt(beta))
        else:
            x0 = x0_from_score(x, score, ctx.gamma(t), ctx.sigma(t)).clamp(*self.clip_x0)
            a, b, _ = ctx.sde.posterior(*(torch.tensor([u], dtype=torch.float64) for u in (s, t)))
            mean = float(a[0]) * x + float(b[0]) * x0
        if ctx.is_last:
            return mean
        return mean + self.std(ctx, t, s, v) * ctx.noise(x)

    def std(self, ctx: StepContext, t: float, s: float, v: Tensor | None) -> float | Tensor:
        """σ of the noise added on the step t → s (``v``: the model's variance output)."""
        if self.variance is Variance.BETA:
            return math.sqrt(ctx.transition(t, s)[1])
        if self.variance is Variance.BETA_TILDE:
            return math.sqrt(ctx.posterior_variance(t, s))
        return torch.exp(0.5 * self.learned_step_log_variance(ctx, t, s, v))

    @staticmethod
    def learned_step_log_variance(ctx: StepContext, t: float, s: float, v: Tensor) -> Tensor:
        """log σ² of the step t → s from the model's extra output v, by its convention
        (``ScoreFn.log_variance``) with the step's log β and log β̃. Where β̃ = 0 (a step
        onto σ_s = 0: the chain's first step) β̃ of the grid's step before it (ending at t) stands
        in, as the clipped log β̃ of the loss does (β̃_1 → β̃_2 on the DDPM chain)."""
        beta_tilde = ctx.posterior_variance(t, s)
        if beta_tilde <= 0 and ctx.index > 0:
            beta_tilde = ctx.posterior_variance(float(ctx.times[ctx.index - 1]), t)
        if beta_tilde <= 0:
            raise ValueError(f"β̃ = 0 on the step t={t} → s={s} and no earlier step to stand in")
        log_beta = math.log(ctx.transition(t, s)[1])
        return ctx.score.log_variance(v, log_beta, math.log(beta_tilde), t)
