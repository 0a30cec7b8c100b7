"""Continuous-time denoising score matching (survey §4.3; Song et al. 2021, eq. 7).

    L(θ) = E_{t~U[t_min,T]} E_{x0} E_{ε~N(0,I)} [ λ(t)/σ_t² ‖ε − ε_θ(γ_t x0 + σ_t ε, t)‖² ]

which equals E[λ(t) ‖s_θ(x_t, t) − ∇log q(x_t|x0)‖²] since s_θ = −ε_θ/σ_t and
∇log q(x_t|x0) = −ε/σ_t. The norm is SUMMED over data dimensions and the batch is AVERAGED.

Every loss splits into ``draw(model, x0, generator) -> draws`` (the batch's random times and noise,
a dict of tensors whose first axis is the batch) and ``evaluate(model, x0, draws) -> SampleLosses``
(per-sample values; the loss is their mean), so a trainer can draw one global batch and evaluate
slices of it on several processes or in micro-batches; ``loss(model, x0, generator)`` is the mean
of ``evaluate(draw(...))``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sde_gen.losses.time_samplers import TimeSampler, UniformTimeSampler
from sde_gen.losses.weighting import SigmaSquaredWeighting, Weighting
from sde_gen.models.score_model import ScoreModel

__all__ = ["DSMLoss", "SampleLosses", "Draws", "take", "randn_like", "model_batch"]

Draws = dict[str, Tensor]
"""A batch's random draws (times, noise …), each tensor with the batch on its first axis."""


class SampleLosses(NamedTuple):
    """Per-sample losses (the batch loss is their mean) and, for a loss that adapts to what it
    sees (a loss-aware step sampler), the per-sample values it learns from (``update``)."""

    loss: Tensor
    feedback: Tensor | None = None


def take(draws: Draws, rows: slice) -> Draws:
    """The draws of the samples ``rows`` of the batch."""
    return {key: value[rows] for key, value in draws.items()}


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, I) noise like x, drawn on the generator's device (reproducible across devices)."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


def model_batch(model: torch.nn.Module, x0: Tensor) -> Tensor:
    """x0 in the dtype of the model's parameters (float64/float16 data are cast); a ValueError
    naming the problem for an empty batch or integer data (scale levels to [−1, 1] first)."""
    if not isinstance(x0, Tensor):
        raise ValueError(f"x0 must be a torch.Tensor of shape (B, ...), got {type(x0).__name__}")
    if x0.ndim < 2 or x0.shape[0] == 0:
        size = x0.shape[0] if x0.ndim else "none"
        raise ValueError(
            f"the loss needs a non-empty batch of shape (B, ...), got batch size {size} "
            f"(shape {tuple(x0.shape)})"
        )
    if not x0.is_floating_point():
        raise ValueError(
            f"x0 has dtype {x0.dtype}; the loss needs floating data scaled to [-1, 1] "
            "(integer levels: sde_gen.data.images.scale_to_unit)"
        )
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return x0 if param is None else x0.to(param.dtype)


class DSMLoss:
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

    needs_feedback = False

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

    def update(self, model: ScoreModel, draws: Draws, feedback: Tensor | None) -> None:
        """Nothing to learn: DSM's samplers are fixed."""

    def per_sample(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(t, coef(t)·‖ε − ε_θ(x_t, t)‖²) per sample; the loss is the mean of the second."""
        draws = self.draw(model, x0, generator)
        return draws["t"], self.evaluate(model, x0, draws).loss

    def __call__(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.per_sample(model, x0, generator)[1].mean()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
