"""The discrete DDPM chain (survey §3.1): β schedules, ᾱ, q(x_t|x0), the posterior and VLB terms.

Indices follow the paper: t = 1..T, with tensors indexed by ``t - 1``; ᾱ_0 = 1.
All schedule arrays are float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.sde import expand_as

__all__ = [
    "DiscreteSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
]


class DiscreteSchedule:
    """A DDPM chain q(x_t|x_{t-1}) = N(√(1−β_t) x_{t−1}, β_t I), t = 1..T."""

    def __init__(self, betas: Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be 1-D and non-empty, got shape {tuple(betas.shape)}")
        if betas.min() <= 0 or betas.max() >= 1:
            raise ValueError(f"betas must lie in (0, 1), got [{betas.min()}, {betas.max()}]")
        if betas.numel() < 2:
            raise ValueError(
                f"T={betas.numel()}: a DDPM chain needs T >= 2 steps (the clipped log β̃_1 "
                "borrows β̃_2, Ho et al. 2020)"
            )
        self.betas = betas
        self.T = len(betas)
        self.alphas = 1.0 - betas
        self.log_alpha_bar = torch.cumsum(torch.log1p(-betas), 0)
        self.alpha_bar = torch.exp(self.log_alpha_bar)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) β_t  (survey §3.1)
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        # log β̃ clipped at t = 1 where β̃_1 = 0 (Ho et al. 2020, Nichol & Dhariwal 2021)
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        # μ̃_t = coef_x0 x0 + coef_xt x_t
        self.posterior_coef_x0 = betas * torch.sqrt(self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_coef_xt = (
            (1 - self.alpha_bar_prev) * torch.sqrt(self.alphas) / (1 - self.alpha_bar)
        )

    def _at(self, arr: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """arr[t − 1] broadcast against x, for integer steps t ∈ {1..T} of shape (B,)."""
        if t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"discrete steps t must be an integer tensor, got {t.dtype}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if t.min() < 1 or t.max() > self.T:
            bad = t[(t < 1) | (t > self.T)][0].item()
            raise ValueError(f"step t={bad} is outside [1, T={self.T}]")
        return expand_as(arr.to(x.device)[t - 1], x)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε  (survey eq. for q(x_t|x0))."""
        return (
            self._at(self.alpha_bar.sqrt(), t, x0) * x0
            + self._at((1 - self.alpha_bar).sqrt(), t, x0) * noise
        )

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean √ᾱ_t x0 and variance (1 − ᾱ_t) of q(x_t|x0)."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0, self._at(1 - self.alpha_bar, t, x0)

    def posterior_mean_variance(
        self, x0: Tensor, xt: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t−1}|x_t, x0) = N(μ̃_t, β̃_t I); returns (μ̃_t, β̃_t, clipped log β̃_t)."""
        mean = (
            self._at(self.posterior_coef_x0, t, xt) * x0
            + self._at(self.posterior_coef_xt, t, xt) * xt
        )
        return (
            mean,
            self._at(self.posterior_variance, t, xt),
            self._at(self.posterior_log_variance_clipped, t, xt),
        )

    def predict_x0_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
        return (xt - self._at((1 - self.alpha_bar).sqrt(), t, xt) * eps) / self._at(
            self.alpha_bar.sqrt(), t, xt
        )

    def continuous_time(self, t: Tensor) -> Tensor:
        """Continuous time t/T ∈ (0, 1] of discrete step t (``DiscreteVPSDE``'s grid)."""
        return t.to(torch.float64) / self.T


class LinearSchedule(DiscreteSchedule):
    """β_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020: 1e-4 → 0.02, T = 1000).

    As T → ∞ with T β_t → β(t/T) this chain is the VP SDE with β_min = T·beta_start and
    β_max = T·beta_end (survey §4.2). ᾱ_t of the chain and γ² of the SDE
    differ by O(Σβ_t²) = O(β_max²/T) in log, since log(1−β) = −β − β²/2 − ….
    """

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if T < 2:
            raise ValueError(f"T={T} must be >= 2 (the clipped log β̃_1 borrows β̃_2)")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start={beta_start} < beta_end={beta_end} < 1 for a linear schedule"
            )
        self.beta_start, self.beta_end = beta_start, beta_end
        super().__init__(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


class CosineSchedule(DiscreteSchedule):
    """ᾱ_t = cos²(((t/T + s)/(1 + s)) π/2) / cos²(s/(1+s) π/2), β_t clipped at ``max_beta``."""

    def __init__(self, T: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        if T < 2:
            raise ValueError(f"T={T} must be >= 2 (the clipped log β̃_1 borrows β̃_2)")
        if s < 0:
            raise ValueError(f"s={s} must be >= 0")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta={max_beta} must lie in (0, 1)")
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        super().__init__(betas)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(μ₁, e^{v₁}) ‖ N(μ₂, e^{v₂})) elementwise, in nats."""
    return 0.5 * (
        logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
        - 1.0
    )


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, num_bins: int = 256
) -> Tensor:
    """log ∫_bin N(y; μ, e^{2 log_scale}) dy for data x in [−1, 1] on ``num_bins`` equal bins.

    The decoder L_0 of Ho et al. (2020): the two edge bins extend to ±∞. Elementwise, in nats.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins={num_bins} must be >= 2")
    half_width = 1.0 / (num_bins - 1)
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _std_normal_cdf(inv_std * (centered + half_width))
    cdf_min = _std_normal_cdf(inv_std * (centered - half_width))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    edge = 1.0 - 1e-3 * half_width
    return torch.where(
        x < -edge, log_cdf_plus, torch.where(x > edge, log_one_minus_cdf_min, log_delta)
    )


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_t of the linear schedule (for configs)."""
    return LinearSchedule(T, beta_start, beta_end).betas


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """β_t of the cosine schedule (for configs)."""
    return CosineSchedule(T, s, max_beta).betas
