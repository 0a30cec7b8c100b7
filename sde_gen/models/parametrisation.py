"""Parametrisations: what a network's output means and how its input is scaled (preconditioning).

For x_t = γ_t x0 + σ_t ε every parametrisation is a pair of maps around the raw network F:
``input_scale`` (c_in, the factor on x_t before F sees it) and ``eps`` (the ε̂ that F's output
implies), with ``target`` the output that implies the true ε (the regression target it is trained
towards through the same λ(t)-weighted score-matching loss, see ``ScoreModel.eps``). The identities
are the survey's (§4.3, s = −ε/σ, Tweedie's x̂0 = (x − σ ε̂)/γ), Salimans & Ho's v = γ ε − σ x0
(2022; here without assuming γ² + σ² = 1) and Karras et al.'s preconditioning (EDM, 2022, Table 1)
written in the scale-free variables x̃ = x/γ, σ̃ = σ/γ so that it holds for every SDE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Parametrisation", "Eps", "X0", "V", "Score", "EDM"]

Coef = Tensor | float


class Parametrisation:
    """ε-prediction with unit input scale; subclasses override what differs. ``gamma`` and
    ``sigma`` are γ_t, σ_t broadcastable to x (float64 where the schedule is)."""

    uses_coefficients: bool = True
    """Whether ``input_scale``/``eps`` read γ_t, σ_t (ε-prediction does not: no schedule call)."""

    def input_scale(self, gamma: Coef, sigma: Coef) -> Coef:
        """c_in: the network sees c_in · x_t."""
        return 1.0

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        """ε̂ implied by the network's output ``out`` at x_t = x."""
        raise NotImplementedError

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        """The output that implies ε exactly at x_t = γ x0 + σ ε (``eps(target, x_t) = ε``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Eps(Parametrisation):
    """F predicts ε (Ho et al. 2020): ε̂ = F."""

    uses_coefficients = False

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return out

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return eps


class X0(Parametrisation):
    """F predicts the data x̂0: ε̂ = (x − γ x̂0)/σ."""

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return (x - gamma * out) / sigma

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return x0


class V(Parametrisation):
    """F predicts v = γ ε − σ x0 (Salimans & Ho 2022): ε̂ = (σ x + γ v)/(γ² + σ²)."""

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return (sigma * x + gamma * out) / (gamma**2 + sigma**2)

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return gamma * eps - sigma * x0


class Score(Parametrisation):
    """F predicts the score ∇log q_t (score-SDE's NCSN++): ε̂ = −σ F."""

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return -sigma * out

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        return -eps / sigma


class EDM(Parametrisation):
    """Karras et al.'s preconditioning in x̃ = x/γ, σ̃ = σ/γ: the denoiser
    D(x̃; σ̃) = c_skip x̃ + c_out F(c_in x̃, c_noise) with c_skip = σ_d²/(σ̃² + σ_d²),
    c_out = σ̃ σ_d/√(σ̃² + σ_d²), c_in = 1/√(σ̃² + σ_d²); ε̂ = (x̃ − D)/σ̃. In x_t the input scale
    is c_in/γ = 1/√(σ² + γ² σ_d²): a VE network sees inputs of unit size, not σ_max.
    (c_noise = ¼ ln σ̃ is the time convention ``network_time.EDMNoise``.)"""

    def __init__(self, sigma_data: float = 0.5):
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data={sigma_data!r} is invalid: need a finite number > 0")
        self.sigma_data = float(sigma_data)

    def _skip_out(self, gamma: Coef, sigma: Coef) -> tuple[Coef, Coef, Coef]:
        """(σ̃, c_skip, c_out) at γ, σ."""
        s = sigma / gamma
        d2 = self.sigma_data**2
        return s, d2 / (s**2 + d2), s * self.sigma_data / _sqrt(s**2 + d2)

    def input_scale(self, gamma: Coef, sigma: Coef) -> Coef:
        return 1.0 / _sqrt(sigma**2 + gamma**2 * self.sigma_data**2)

    def eps(self, out: Tensor, x: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        s, c_skip, c_out = self._skip_out(gamma, sigma)
        x_tilde = x / gamma
        return (x_tilde - (c_skip * x_tilde + c_out * out)) / s

    def target(self, x0: Tensor, eps: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
        s, c_skip, c_out = self._skip_out(gamma, sigma)
        return (x0 - c_skip * (x0 + s * eps)) / c_out

    def __repr__(self) -> str:
        return f"EDM(sigma_data={self.sigma_data})"


def _sqrt(v: Coef) -> Coef:
    return torch.sqrt(v) if isinstance(v, Tensor) else math.sqrt(v)
