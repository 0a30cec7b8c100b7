"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2–3): at each grid time t,
``corrector_steps`` Langevin steps at signal-to-noise ratio ``snr``, then a predictor step t → s.

Predictors are small objects picked by config (``predictor: {_target_: …}``):
``ReverseDiffusionPredictor`` (Song et al.'s reverse diffusion on the exact transition of the
SDE) and ``EulerMaruyamaPredictor``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sde_gen.sde.conversions import drift
from sde_gen.solvers.base import FixedStepSolver, StepContext, check_int
from sde_gen.solvers.euler_maruyama import euler_maruyama_step

__all__ = ["PredictorCorrector", "ReverseDiffusionPredictor", "EulerMaruyamaPredictor"]


class EulerMaruyamaPredictor:
    """x_s = x_t − [f x_t − g² s_θ] h + g √h z."""

    def __call__(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        return euler_maruyama_step(ctx, x, t, s)

    def __repr__(self) -> str:
        return "EulerMaruyamaPredictor()"


class ReverseDiffusionPredictor:
    """Reverse diffusion (Song et al. 2021, eq. 46) on the forward step x_t = a x_s + √v z
    (a = γ_{t|s}, v = σ_{t|s}²): x_s = x_t − [(a − 1) x_t − v s_θ(x_t, t)] + √v z, the reverse
    drift of the discrete forward step (f = a − 1, g² = v). For VP this is Song et al.'s
    2 − √(1 − β_i); for VE, a = 1 and v = σ_t² − σ_s²."""

    def __call__(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        a, v = ctx.transition(t, s)
        return x - drift(x, ctx.score(x, t), a - 1, v, 1.0) + math.sqrt(v) * ctx.noise(x)

    def __repr__(self) -> str:
        return "ReverseDiffusionPredictor()"


class PredictorCorrector(FixedStepSolver):
    """PC sampler; nfe = steps · (corrector_steps + 1) (+1 if denoise_final).

    Langevin corrector (Song et al. 2021, Alg. 4/5): x ← x + ε s_θ + √(2ε) z with
    ε = 2 α (snr ‖z‖ / ‖s_θ‖)², α = γ_{t|s}² (= 1 − β_i for VP, 1 for VE), the norms averaged over
    the batch as in Song et al.'s code (per-sample norms blow up in low dimension, where ‖s_θ‖ of a
    sample near a mode is ≈ 0); a sample therefore depends on the rest of its batch.
    ``evals_per_step`` = corrector_steps + 1.
    """

    order = 1.0
    stochastic = True
    evals_per_step = 2

    default_steps = 500
    default_denoise_final = True

    def __init__(
        self,
        *shared: Any,
        predictor: object | None = None,
        corrector_steps: int = 1,
        snr: float = 0.16,
        **options: Any,
    ):
        super().__init__(*shared, **options)
        self.predictor = ReverseDiffusionPredictor() if predictor is None else predictor
        if not callable(self.predictor):
            raise ValueError(f"predictor={predictor!r} must be a predictor object")
        check_int("corrector_steps", corrector_steps, 0)
        if not (isinstance(snr, int | float) and snr > 0 and math.isfinite(snr)):
            raise ValueError(f"snr={snr} must be a finite number > 0")
        self.corrector_steps, self.snr = corrector_steps, float(snr)
        self.evals_per_step = corrector_steps + 1

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        alpha = ctx.transition(t, s)[0] ** 2
        for _ in range(self.corrector_steps):
            grad = ctx.score(x, t)
            z = ctx.noise(x)
            grad_norm = grad.flatten(1).norm(dim=1).mean().clamp_min(torch.finfo(x.dtype).tiny)
            noise_norm = z.flatten(1).norm(dim=1).mean()
            eps = 2 * alpha * (self.snr * noise_norm / grad_norm) ** 2
            x = x + eps * grad + torch.sqrt(2 * eps) * z
        return self.predictor(ctx, x, t, s)
