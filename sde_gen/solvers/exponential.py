"""What the exponential integrators in λ = log(γ_t/σ_t) share (DPM-Solver, UniPC, DPM-Solver-12/23).

On the data prediction x̂0 the probability-flow ODE integrates exactly in its linear part
(Lu et al. 2022b, eq. 9): with h = λ_s − λ_t,

    x_s = (σ_s/σ_t) x_t + σ_s ∫_{λ_t}^{λ_s} e^λ x̂0(λ) dλ
        = (σ_s/σ_t) x_t + γ_s Σ_{k≥0} h^{k+1} φ_{k+1}(−h) x̂0^{(k)}(λ_t),

φ_k(z) = ∫_0^1 e^{(1−θ)z} θ^{k−1}/(k−1)! dθ, so h φ₁(−h) = 1 − e^{−h}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from sde_gen.solvers.base import StepContext

__all__ = ["phi", "half_log_snr", "exact_weights", "exponential_step"]

Weights = Callable[[list[float], float], list[float]]


def phi(k: int, z: float) -> float:
    """φ_k(z): φ₀ = e^z, φ_{k+1}(z) = (φ_k(z) − 1/k!)/z; the series Σ_j z^j/(j+k)! for |z| < ½
    (where the recursion cancels)."""
    if abs(z) < 0.5:
        return sum(z**j / math.factorial(j + k) for j in range(24))
    value = math.exp(z)
    for j in range(k):
        value = (value - 1 / math.factorial(j)) / z
    return value


def half_log_snr(gamma: float, sigma: float) -> float:
    """λ = log(γ/σ) = ½ log-SNR (σ > 0)."""
    return math.log(gamma / sigma)


def exact_weights(r: list[float], h: float) -> list[float]:
    """w with Σ_k w_k r_k^{j−1} = c_j = j! h φ_{j+1}(−h), j = 1 … len(r): Σ_k w_k D_k/r_k then
    matches Σ_j h^{j+1} φ_{j+1}(−h) x̂0^{(j)} up to j = len(r), since
    D_k/r_k = Σ_{j≥1} r_k^{j−1} h^j x̂0^{(j)}/j! for D_k = x̂0(λ_t + r_k h) − x̂0(λ_t)."""
    n = len(r)
    c = [math.factorial(j) * h * phi(j + 1, -h) for j in range(1, n + 1)]
    vandermonde = np.array([[r_k ** (j - 1) for r_k in r] for j in range(1, n + 1)])
    return np.linalg.solve(vandermonde, np.array(c)).tolist()


def exponential_step(
    ctx: StepContext,
    x: Tensor,
    t: float,
    s: float,
    m0: Tensor,
    points: list[tuple[float, Tensor]],
    weights: Weights = exact_weights,
) -> Tensor:
    """x_s = (σ_s/σ_t) x + γ_s (1 − e^{−h}) m₀ + γ_s Σ_k w_k (m_k − m₀)/r_k for x̂0 values m_k at
    λ_k (``points``), r_k = (λ_k − λ_t)/h, h = λ_s − λ_t; no points: DPM-Solver++(1) = DDIM."""
    gamma_s, sigma_s = ctx.gamma(s), ctx.sigma(s)
    lam_t = half_log_snr(ctx.gamma(t), ctx.sigma(t))
    h = half_log_snr(gamma_s, sigma_s) - lam_t
    x_s = (sigma_s / ctx.sigma(t)) * x - gamma_s * math.expm1(-h) * m0
    if points:
        r = [(lam_k - lam_t) / h for lam_k, _ in points]
        for w_k, r_k, (_, m_k) in zip(weights(r, h), r, points, strict=True):
            x_s = x_s + (gamma_s * w_k / r_k) * (m_k - m0)
    return x_s
