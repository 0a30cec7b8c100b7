"""Coordinates in which to integrate the probability-flow ODE (Song et al. 2021, eq. 13):
the state x over t as written; y = x/γ_t over u = log σ̃_t (σ̃ = σ_t/γ_t); or the state of the
equivalent variance-preserving process z = x/√(γ_t² + σ_t²) over the angle φ = arctan σ̃_t.
The last two depend on t only through σ̃, so they are smooth whatever β(t) does. Shared by the
PF-ODE sampler and the likelihood.

A coordinate object maps times to its variable u (``bounds``, ``u_of_t``, ``t_of_u``), x to its
state y and back (``to_state``, ``to_x``), gives dy/du (``rhs``) and log|det ∂y/∂x| per data
dimension (``log_jacobian``), which the change of variables of the likelihood needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sde_gen.sde.base import SDE, Coefficients
from sde_gen.sde.conversions import drift, eps_from_score

__all__ = [
    "TimeCoordinates",
    "ScaledCoordinates",
    "AngleCoordinates",
    "coefficients_at",
    "log_sigma_tilde",
    "t_of_log_sigma_tilde",
    "ScalarScore",
]

ScalarScore = Callable[[Tensor, float], Tensor]
"""score(x, t) at one time t for the whole batch (the solvers' counted score, for instance)."""


def coefficients_at(sde: SDE, t: float) -> Coefficients:
    """(f, g², γ, σ) at one time t as float64 Python floats (one boundary check; detached from
    a learned schedule)."""
    c = sde.coefficients(torch.tensor([t], dtype=torch.float64))
    return Coefficients(*(float(v[0].detach()) for v in c))


class TimeCoordinates:
    """Integrate the PF-ODE as written: state x, variable t (from T down to t_min)."""

    def bounds(self, sde: SDE, t_min: float) -> tuple[float, float]:
        return sde.T, t_min

    def u_of_t(self, sde: SDE, t: Tensor) -> Tensor:
        return t

    def t_of_u(self, sde: SDE, u: float) -> float:
        return u

    def to_state(self, sde: SDE, x: Tensor, u: float) -> Tensor:
        return x

    def to_x(self, sde: SDE, y: Tensor, u: float) -> Tensor:
        return y

    def log_jacobian(self, sde: SDE, u: float) -> float:
        """log|∂y/∂x| per dimension: 0 (y = x)."""
        return 0.0

    def rhs(self, sde: SDE, score: ScalarScore, y: Tensor, u: float) -> Tensor:
        """dx/dt = f x − ½ g² ∇log q_t(x)."""
        c = coefficients_at(sde, u)
        return drift(y, score(y, u), c.f, c.g2, 0.5)

    def __repr__(self) -> str:
        return "TimeCoordinates()"


def log_sigma_tilde(sde: SDE, t: Tensor) -> Tensor:
    """log σ̃_t = log(σ_t/γ_t) = −½ λ_t (λ: the log-SNR), detached from a learned schedule."""
    return -0.5 * sde.log_snr(t.to(torch.float64)).detach()


def t_of_log_sigma_tilde(sde: SDE, u: float) -> float:
    """The t with log σ̃_t = u (``sde.t_from_log_snr(−2u)``), clamped to [0, T]."""
    t = float(sde.t_from_log_snr(torch.tensor([-2.0 * u], dtype=torch.float64))[0].detach())
    return min(max(t, 0.0), sde.T)


class ScaledCoordinates(TimeCoordinates):
    """The same ODE in y = x/γ_t and u = log σ̃_t, σ̃ = σ/γ (Karras et al. 2022's scaled form):
    dy/dσ̃ = ε(x, t) with ε = −σ_t ∇log q_t, so dy/du = σ̃ ε.

    Smooth in u whatever β(t) does, so adaptive steps work on schedules with kinks or jumps in
    β(t) (the DDPM chain as ``DiscreteVPSDE``); t(u) comes from ``sde.t_from_log_snr(−2u)``.
    """

    def bounds(self, sde: SDE, t_min: float) -> tuple[float, float]:
        u = log_sigma_tilde(sde, torch.tensor([sde.T, t_min], dtype=torch.float64))
        return float(u[0]), float(u[1])

    def u_of_t(self, sde: SDE, t: Tensor) -> Tensor:
        return log_sigma_tilde(sde, t)

    def t_of_u(self, sde: SDE, u: float) -> float:
        return t_of_log_sigma_tilde(sde, u)

    def to_state(self, sde: SDE, x: Tensor, u: float) -> Tensor:
        return x / coefficients_at(sde, self.t_of_u(sde, u)).gamma

    def to_x(self, sde: SDE, y: Tensor, u: float) -> Tensor:
        return y * coefficients_at(sde, self.t_of_u(sde, u)).gamma

    def log_jacobian(self, sde: SDE, u: float) -> float:
        """log|∂y/∂x| per dimension: −log γ_t (y = x/γ_t)."""
        return -math.log(coefficients_at(sde, self.t_of_u(sde, u)).gamma)

    def rhs(self, sde: SDE, score: ScalarScore, y: Tensor, u: float) -> Tensor:
        """dy/du = σ̃ ε(γ y, t), ε = −σ_t ∇log q_t."""
        t = self.t_of_u(sde, u)
        c = coefficients_at(sde, t)
        return (c.sigma / c.gamma) * eps_from_score(score(c.gamma * y, t), c.sigma)

    def __repr__(self) -> str:
        return "ScaledCoordinates()"


class AngleCoordinates(TimeCoordinates):
    """The same ODE for z = x/√(γ_t² + σ_t²) over φ = arctan σ̃_t (Salimans & Ho 2022, §4).

    z is the state of the variance-preserving process with the same σ̃ (Kingma et al. 2021,
    §5.1): z = cos φ x0 + sin φ ε, and the PF-ODE is dz/dφ = v̂ = cos φ ε̂ − sin φ x̂0, which with
    x̂0 = (z − sin φ ε̂)/cos φ reads dz/dφ = (ε̂ − sin φ z)/cos φ. Unlike y = x/γ, which grows like
    σ̃ at high noise, z stays O(1) at both ends, and φ ≈ σ̃ is linear where σ̃ is small: adaptive
    RK45 takes about half the steps of (y, log σ̃), and no more than (x, t) (docs/results.md,
    "Likelihood coordinates"). For the VP SDE z = x. Needs γ_T > 0 (φ_T < π/2), as the log-SNR
    does.
    """

    def bounds(self, sde: SDE, t_min: float) -> tuple[float, float]:
        phi = self.u_of_t(sde, torch.tensor([sde.T, t_min], dtype=torch.float64))
        return float(phi[0]), float(phi[1])

    def u_of_t(self, sde: SDE, t: Tensor) -> Tensor:
        return torch.atan(torch.exp(log_sigma_tilde(sde, t)))

    def t_of_u(self, sde: SDE, u: float) -> float:
        return t_of_log_sigma_tilde(sde, math.log(math.tan(u)))

    def _at(self, sde: SDE, u: float) -> tuple[float, Coefficients, float]:
        """t(φ), the coefficients there and √(γ² + σ²) = |∂x/∂z|."""
        t = self.t_of_u(sde, u)
        c = coefficients_at(sde, t)
        return t, c, math.hypot(c.gamma, c.sigma)

    def to_state(self, sde: SDE, x: Tensor, u: float) -> Tensor:
        return x / self._at(sde, u)[2]

    def to_x(self, sde: SDE, y: Tensor, u: float) -> Tensor:
        return y * self._at(sde, u)[2]

    def log_jacobian(self, sde: SDE, u: float) -> float:
        """log|∂z/∂x| per dimension: −½ log(γ_t² + σ_t²) (0 for the VP SDE)."""
        return -math.log(self._at(sde, u)[2])

    def rhs(self, sde: SDE, score: ScalarScore, y: Tensor, u: float) -> Tensor:
        """dz/dφ = (ε̂(x, t) − sin φ z)/cos φ, x = √(γ² + σ²) z, cos φ = γ/√(γ² + σ²)."""
        t, c, scale = self._at(sde, u)
        eps = eps_from_score(score(scale * y, t), c.sigma)
        return (eps - (c.sigma / scale) * y) / (c.gamma / scale)

    def __repr__(self) -> str:
        return "AngleCoordinates()"
