"""The variance of a reverse step p(x_s | x_t) = N(μ̃(x_t, x̂0), Σ I), s < t (survey §3.1).

Beside the fixed choices β = σ²_{t|s} and β̃ = σ²_{t|s} σ_s²/σ_t² (``SDE.transition``,
``SDE.posterior``), the network's own learned Σ is read by the model's convention
(``models.learned_variance``: Nichol & Dhariwal 2021, eq. 15, or Σ itself), which the loss
(``losses/discrete.py``) and the sampler (``solvers/ancestral.py``) both call; one is computed:

optimal (Bao et al. 2022, Theorem 1): for q_λ(x_s | x_t, x0) = N(μ̃_λ, λ² I) the KL-optimal
    isotropic variance is σ*² = λ² + (√(σ_t²/α) − √(σ_s² − λ²))² (1 − Γ_t), α = γ_{t|s}²,
    Γ_t = E_{q_t} ‖E[ε | x_t]‖²/d, estimated by E‖ε_θ(x_t, t)‖²/d (``optimal_variance``); the
    paper's β̄_n, β̄_{n−1} are σ_t², σ_s² and the formula holds for any pair s < t (skip steps).
    Its bounds (Theorem 2) are bounds on Γ_t (``ms_eps_range``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Real = float | Tensor

__all__ = [
    "optimal_variance",
    "ms_eps_range",
    "analytic_chain_log_variance",
]


def optimal_variance(
    lambda2: Real, sigma_t2: Real, sigma_s2: Real, alpha: Real, ms_eps: Real
) -> Real:
    """σ*² = λ² + (√(σ_t²/α) − √(σ_s² − λ²))² (1 − Γ_t) (Bao et al. 2022, Theorem 1), for a step
    s < t with α = γ_{t|s}², λ² ≤ σ_s² the variance of q_λ(x_s | x_t, x0) (λ² = β̃: DDPM) and
    Γ_t = ``ms_eps`` = E‖ε_θ(x_t, t)‖²/d. The second term is c² Cov[x0 | x_t] averaged over x_t,
    with c the coefficient of x0 in μ̃_λ and E tr Cov[x0 | x_t]/d = (σ_t²/γ_t²)(1 − Γ_t).
    Floats give a float; tensors (broadcast) a tensor."""
    rest = sigma_s2 - lambda2
    rest = rest.clamp(min=0.0) if isinstance(rest, Tensor) else max(rest, 0.0)
    gap = (sigma_t2 / alpha) ** 0.5 - rest**0.5
    return lambda2 + gap**2 * (1.0 - ms_eps)


def ms_eps_range(
    gamma_t: float, sigma_t: float, half_width: float | None = None
) -> tuple[float, float]:
    """The interval Theorem 2 of Bao et al. (2022) allows for Γ_t = E‖E[ε | x_t]‖²/d.

    Always [0, 1] (so λ² ≤ σ*² ≤ λ² + (√(σ_t²/α) − √(σ_s² − λ²))²); for data in [a, b]^d with
    ``half_width`` = (b − a)/2, Cov[x0 | x_t] ≤ ((b − a)/2)² raises the lower end to
    1 − γ_t² ((b − a)/2)²/σ_t² (their bound for bounded data).
    """
    low = 0.0
    if half_width is not None:
        low = max(low, 1.0 - (gamma_t * half_width / sigma_t) ** 2)
    return low, 1.0


def analytic_chain_log_variance(
    betas: Tensor, ms_eps: Tensor, half_width: float | None = None
) -> Tensor:
    """log σ*²_n for every step n = 1..T of the DDPM chain of ``betas`` (shape (T,)), from
    Γ_n = ``ms_eps`` [n − 1] estimated at t = n/T: ``optimal_variance`` with λ² = β̃_n (0 at
    n = 1, the decoder's step), σ_t² = 1 − ᾱ_n, σ_s² = 1 − ᾱ_{n−1}, α = α_n and Γ_n clipped into
    ``ms_eps_range`` (with ``half_width`` for bounded data: the clipped variant). What
    ``vlb_bits_per_dim(..., log_variance=)`` takes (Bao et al. 2022, their NLL bound). A variance
    that rounds to 0 (Γ_1 clipped to 1 at the decoder's step) is floored at 1e-12."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if ms_eps.shape != betas.shape:
        raise ValueError(
            f"ms_eps of shape {tuple(ms_eps.shape)} needs one Γ per step {betas.shape}"
        )
    alpha_bar = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    out = []
    for n in range(len(betas)):
        sigma_t2, sigma_s2 = 1 - float(alpha_bar[n]), 1 - float(prev[n])
        lambda2 = float(betas[n]) * sigma_s2 / sigma_t2
        low, high = ms_eps_range(math.sqrt(float(alpha_bar[n])), math.sqrt(sigma_t2), half_width)
        gamma_n = min(max(float(ms_eps[n]), low), high)
        var = optimal_variance(lambda2, sigma_t2, sigma_s2, 1 - float(betas[n]), gamma_n)
        out.append(math.log(max(var, 1e-12)))
    return torch.tensor(out, dtype=torch.float64)
