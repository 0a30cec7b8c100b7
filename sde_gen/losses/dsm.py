"""Continuous-time denoising score matching (survey §4.3; Song et al. 2021, eq. 7).

    L(θ) = E_{t~U[t_min,T]} E_{x0} E_{ε~N(0,I)} [ λ(t)/σ_t² ‖ε − ε_θ(γ_t x0 + σ_t ε, t)‖² ]

which equals E[λ(t) ‖s_θ(x_t, t) − ∇log q(x_t|x0)‖²] since s_θ = −ε_θ/σ_t and
∇log q(x_t|x0) = −ε/σ_t. The norm is SUMMED over data dimensions and the batch is AVERAGED.

The draw/evaluate protocol is ``losses.base.Loss``'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde_gen.losses.base import Draws, Loss, SampleLosses, model_batch, randn_like
from sde_gen.losses.time_samplers import TimeSampler, UniformTimeSampler
from sde_gen.losses.weighting import SigmaSquaredWeighting, Weighting
from sde_gen.models.score_model import ScoreModel

__all__ = ["DSMLoss"]


class DSMLoss(Loss):
    """Weighted DSM with weighting λ(t) (a ``Weighting``) and time sampler r(t) (a
    ``TimeSampler``); None gives λ = σ² and t ~ U[t_min, T]. Every sampler returns the factor
    λ/σ² · u/r, so uniform and importance sampling estimate the same number (the loss above).
    """

    per_dimension = False  # a sample's loss is summed over the data's dimensions

    def __init__(
        self,
        weighting: Weighting | None = None,
        time_sampler: TimeSampler | None = None,
        t_min: float = 1e-5,
    ):
        weighting = SigmaSquaredWeighting() if weighting is None else weighting
        time_sampler = UniformTimeSampler() if time_sampler is None else time_sampler
        if not isinstance(weighting, Weighting):
            raise ValueError(
                f"weighting={weighting!r} is not a Weighting (sde_gen.losses.Weighting, "
                "λ(t) = weighting(sde, t)); configs pick one with loss/weighting=<name>"
            )
        if not callable(time_sampler):
            raise ValueError(
                f"time_sampler={time_sampler!r} is not a callable TimeSampler; configs pick "
                "one with loss/time_sampler=<name>"
            )
        if not t_min > 0:
            raise ValueError(f"t_min={t_min} must lie in (0, T)")
        self.weighting = weighting
        self.time_sampler = time_sampler
        self.t_min = float(t_min)

    def __repr__(self) -> str:
        return f"DSMLoss({self.weighting!r}, {self.time_sampler!r}, t_min={self.t_min})"

    def draw(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Draws:
        """t ~ r(t) with coef(t) = λ/σ² · u/r, and ε ~ N(0, I), for a batch like ``x0`` (only its
        shape, dtype and device are read)."""
        x0 = model_batch(model, x0)
        t, coef = self.time_sampler(
            model.sde.trusted(), self.weighting, x0.shape[0], self.t_min, generator, x0.device
        )
        return {"t": t, "coef": coef, "noise": randn_like(x0, generator)}

    def evaluate(self, model: ScoreModel, x0: Tensor, draws: Draws) -> SampleLosses:
        """coef(t)·‖ε − ε_θ(γ_t x0 + σ_t ε, t)‖² per sample, the schedule in float64."""
        x0 = model_batch(model, x0)
        t, noise = draws["t"].to(x0.dtype), draws["noise"]
        xt = model.sde.trusted().marginal_sample(x0, t, noise)
        sq = (noise - model.eps(xt, t)).pow(2).flatten(1).sum(1)
        return SampleLosses(draws["coef"].to(sq.dtype) * sq)
