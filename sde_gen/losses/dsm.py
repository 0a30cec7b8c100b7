"""Continuous-time denoising score matching (survey §4.3; Song et al. 2021, eq. 7).

    L(θ) = E_{t~U[t_min,T]} E_{x0} E_{ε~N(0,I)} [ λ(t)/σ_t² ‖ε − ε_θ(γ_t x0 + σ_t ε, t)‖² ]

which equals E[λ(t) ‖s_θ(x_t, t) − ∇log q(x_t|x0)‖²] since s_θ = −ε_θ/σ_t and
∇log q(x_t|x0) = −ε/σ_t. The norm is SUMMED over data dimensions and the batch is AVERAGED.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde_gen.losses.time_samplers import TimeSampler, UniformTimeSampler
from sde_gen.losses.weighting import SigmaSquaredWeighting, Weighting
from sde_gen.models.score_model import ScoreModel

__all__ = ["DSMLoss", "randn_like", "model_batch"]


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

    def per_sample(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(t, coef(t)·‖ε − ε_θ(x_t, t)‖²) per sample; the loss is the mean of the second."""
        x0 = model_batch(model, x0)
        sde = model.sde
        t, coef = self.time_sampler(
            sde, self.weighting, x0.shape[0], self.t_min, generator, x0.device
        )
        noise = randn_like(x0, generator)
        xt = sde.marginal_sample(x0, t.to(x0.dtype), noise)
        eps = model.eps(xt, t.to(x0.dtype))
        sq = (noise - eps).pow(2).flatten(1).sum(1)
        return t, coef.to(sq.dtype) * sq

    def __call__(
        self, model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.per_sample(model, x0, generator)[1].mean()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
