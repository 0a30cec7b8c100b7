"""The variance-exploding SDE (survey §4.2; Song et al. 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.sde.base import SDE, check_horizon, check_positive_increasing

__all__ = ["VESDE"]


class VESDE(SDE):
    """Variance-exploding SDE: f = 0, σ_t² = σ_min²((σ_max/σ_min)^{2t/T} − 1), g² = dσ_t²/dt.

    This is the exact marginal of the SDE started at t = 0 (σ_0 = 0), not the σ_min-offset
    approximation; the prior is N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min, self.sigma_max = check_positive_increasing(
            "sigma_min", sigma_min, "sigma_max", sigma_max
        )
        self.T = check_horizon(T)
        self._log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        k = 2 * self._log_ratio / self.T
        return self.sigma_min**2 * k * torch.exp(k * t)

    def _log_gamma(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _sigma2(self, t: Tensor) -> Tensor:
        return self.sigma_min**2 * torch.expm1(2 * self._log_ratio * t / self.T)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed-form inverse: σ_t² = e^{−λ}, t = T log1p(e^{−λ}/σ_min²)/(2 log(σ_max/σ_min))."""
        lam = log_snr.to(torch.float64)
        t = torch.log1p(torch.exp(-lam) / self.sigma_min**2) * self.T / (2 * self._log_ratio)
        return t.to(log_snr.dtype)

    @property
    def prior_std(self) -> float:
        return self.sigma_max
