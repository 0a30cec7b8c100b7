"""Variance-preserving and sub-VP SDEs on a linear β(t) (survey §4.2; Song et al. 2021).

Both compose one ``LinearBeta`` schedule (β(t) and B(t) = ∫₀ᵗβ) and write their own closed forms:
VP   f = −½β, g² = β,                 γ_t = e^{−B/2}, σ_t² = 1 − e^{−B};
subVP f = −½β, g² = β(1 − e^{−2B}),   γ_t = e^{−B/2}, σ_t² = (1 − e^{−B})².
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde_gen.sde.base import SDE, check_horizon, check_positive_increasing

__all__ = ["LinearBeta", "BetaDriftSDE", "VPSDE", "SubVPSDE"]


class LinearBeta:
    """β(t) = β_min + t (β_max − β_min)/T and B(t) = ∫₀ᵗβ = β_min t + ½(β_max − β_min) t²/T."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min, self.beta_max = check_positive_increasing(
            "beta_min", beta_min, "beta_max", beta_max
        )
        self.T = check_horizon(T)

    def __repr__(self) -> str:
        return f"LinearBeta(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def beta(self, t: Tensor) -> Tensor:
        """β(t)."""
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def t_of_integral(self, b: Tensor) -> Tensor:
        """The t ≥ 0 with B(t) = b: the quadratic's positive root, written without cancellation."""
        a2 = 0.5 * (self.beta_max - self.beta_min) / self.T
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 4 * a2 * b))


class BetaDriftSDE(SDE):
    """The drift both VP and sub-VP share: f = −½β(t), log γ_t = −½B(t), B = ∫₀ᵗβ, with β from one
    ``LinearBeta`` schedule. Subclasses give the diffusion g² and the variance σ_t² of their own:
    neither family inherits the other's closed forms."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.schedule = LinearBeta(beta_min, beta_max, T)
        self.beta_min, self.beta_max = self.schedule.beta_min, self.schedule.beta_max
        self.T = self.schedule.T

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = β_min + t (β_max − β_min) / T."""
        return self._eval(self.schedule.beta, t)

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def _log_gamma(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.integral(t)


class VPSDE(BetaDriftSDE):
    """Variance-preserving SDE: f = −½β(t), g = √β(t), β linear (survey §4.2).

    γ_t = exp(−½∫₀ᵗβ), σ_t² = 1 − γ_t² computed as −expm1(−∫β) so that σ_t is accurate at t → 0.
    """

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t)

    def _sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.schedule.integral(t))

    @property
    def prior_std(self) -> float:
        """1: σ_T² = 1 − e^{−B(T)} and γ_T² + σ_T² = 1 exactly."""
        return 1.0

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = −log(expm1(B(t)))."""
        return self._eval(lambda s: -torch.log(torch.expm1(self.schedule.integral(s))), t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Solve B(t) = log1p(e^{−λ}) for t."""
        b = torch.log1p(torch.exp(-log_snr.to(torch.float64)))
        return self.schedule.t_of_integral(b).to(log_snr.dtype)


class SubVPSDE(BetaDriftSDE):
    """Sub-VP SDE: f = −½β, g² = β(1 − e^{−2B}); σ_t = 1 − e^{−B} (Song et al. 2021, eq. 11)."""

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t) * -torch.expm1(-2 * self.schedule.integral(t))

    def _sigma2(self, t: Tensor) -> Tensor:
        return torch.expm1(-self.schedule.integral(t)) ** 2

    @property
    def prior_std(self) -> float:
        """1: Song et al.'s N(0, I) prior (σ_T² = (1 − e^{−B(T)})² ≈ 1, γ_T² = e^{−B(T)} ≈ 0)."""
        return 1.0

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = −B − 2 log(1 − e^{−B}) = −2 log(2 sinh(B/2))."""
        return self._eval(
            lambda s: (
                -self.schedule.integral(s) - 2 * torch.log(-torch.expm1(-self.schedule.integral(s)))
            ),
            t,
        )

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """e^{−λ} = 4 sinh²(B/2), so B = 2 asinh(½ e^{−λ/2}); then t from B."""
        b = 2 * torch.asinh(0.5 * torch.exp(-0.5 * log_snr.to(torch.float64)))
        return self.schedule.t_of_integral(b).to(log_snr.dtype)
