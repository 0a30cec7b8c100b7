"""Conversions between the score, the noise, the data prediction and the drift (survey §4.3).

Each identity is written once here; the SDE methods, the solvers, the likelihood and the score
model reach it through these functions. Coefficients (γ_t, σ_t, f(t), g(t)²) are floats or tensors
already broadcastable to x.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["x0_from_score", "score_from_x0", "eps_from_score", "score_from_eps", "drift"]

Coef = float | Tensor


def x0_from_score(x: Tensor, score: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
    """Tweedie: E[x0 | x_t] = (x_t + σ_t² ∇log q_t(x_t)) / γ_t for x_t = γ_t x0 + σ_t ε."""
    return (x + sigma**2 * score) / gamma


def score_from_x0(x: Tensor, x0: Tensor, gamma: Coef, sigma: Coef) -> Tensor:
    """∇log q_t(x) = (γ_t x̂0 − x_t)/σ_t²: the score of a data prediction (Tweedie inverted)."""
    return (gamma * x0 - x) / sigma**2


def eps_from_score(score: Tensor, sigma: Coef) -> Tensor:
    """ε̂ = −σ_t ∇log q_t(x): the noise prediction of a score."""
    return -sigma * score


def score_from_eps(eps: Tensor, sigma: Coef) -> Tensor:
    """∇log q_t(x) = −ε̂/σ_t: the score of a noise prediction (ε-parametrisation, survey §4.3)."""
    return -eps / sigma


def drift(x: Tensor, score: Tensor, f: Coef, g2: Coef, score_weight: float) -> Tensor:
    """f(t) x − w g(t)² ∇log q_t(x): reverse-time SDE drift for w = 1 (Anderson 1982), probability
    flow ODE drift for w = ½ (Song et al. 2021, eq. 13)."""
    return f * x - score_weight * g2 * score
