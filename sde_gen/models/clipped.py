"""x̂0 clipping as a parametrisation around another: the ε̂ of a clamped Tweedie estimate."""

from __future__ import annotations

from torch import Tensor

from sde_gen.models.parametrisation import Coef, Parametrisation

__all__ = ["ClippedX0"]


class ClippedX0(Parametrisation):
    """``inner``'s ε̂ with its x̂0 = (x − σ ε̂)/γ clamped to [low, high] and ε̂ recomputed,
    ε̂ = (x − γ clamp(x̂0))/σ: the score whose Tweedie estimate is the clamped one. DDPM ancestral
    steps with it are diffusers' ``DDPMScheduler(clip_sample=True)`` (its posterior mean of the
    clamped x̂0); DDIM matches ``DDIMScheduler`` with ``use_clipped_model_output=True``. Training
    targets are ``inner``'s (clipping is for sampling)."""

    def __init__(self, inner: Parametrisation, low: float = -1.0, high: float = 1.0):
        if not low < high:
            raise ValueError(f"clip_x0=[{low}, {high}] must have low < high")
        self.inner, self.low, self.high = inner, float(low), float(high)

    def input_scale(self, gamma: Coef, sigma: Coef) -> Coef:
        return self.inner.input_scale(gamma, sigma)

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        x0 = ((x - sigma * self.inner.eps(out, x, gamma, sigma)) / gamma).clamp(self.low, self.high)
        return (x - gamma * x0) / sigma

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return self.inner.target(x0, eps, gamma, sigma)

    def __repr__(self) -> str:
        return f"ClippedX0({self.inner!r}, low={self.low}, high={self.high})"
