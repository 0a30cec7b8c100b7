"""Coordinates in which to integrate the probability-flow ODE (Song et al. 2021, eq. 13):
the state x over t as written, or y = x/γ_t over u = log σ̃_t (σ̃ = σ_t/γ_t), where the ODE is
smooth whatever β(t) does. Shared by the PF-ODE sampler and the likelihood.

A coordinate object maps times to its variable u (``bounds``, ``u_of_t``, ``t_of_u``), x to its
state y and back (``to_state``, ``to_x``), gives dy/du (``rhs``) and log|det ∂y/∂x| per data
dimension (``log_jacobian``), which the change of variables of the likelihood needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sde_gen.sde.base import SDE, Coefficients
from sde_gen.sde.conversions import drift, eps_from_score

__all__ = ["TimeCoordinates", "ScaledCoordinates", "coefficients_at", "ScalarScore"]

ScalarScore = Callable[[Tensor, float], Tensor]
"""score(x, t) at one time t for the whole batch (the solvers' counted score, for instance)."""


def coefficients_at(sde: SDE, t: float) -> Coefficients:
    """(f, g², γ, σ) at one time t as float64 Python floats (one boundary check)."""
    c = sde.coefficients(torch.tensor([t], dtype=torch.float64))
    return Coefficients(*(float(v[0]) for v in c))


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


class ScaledCoordinates(TimeCoordinates):
    """The same ODE in y = x/γ_t and u = log σ̃_t, σ̃ = σ/γ (Karras et al. 2022's scaled form):
    dy/dσ̃ = ε(x, t) with ε = −σ_t ∇log q_t, so dy/du = σ̃ ε.

    Smooth in u whatever β(t) does, so adaptive steps work on schedules with kinks or jumps in
    β(t) (the DDPM chain as ``DiscreteVPSDE``); t(u) comes from ``sde.t_from_log_snr(−2u)``.
    """

    def _log_sigma_tilde(self, sde: SDE, t: Tensor) -> Tensor:
        return -0.5 * sde.log_snr(t.to(torch.float64))

    def bounds(self, sde: SDE, t_min: float) -> tuple[float, float]:
        u = self._log_sigma_tilde(sde, torch.tensor([sde.T, t_min], dtype=torch.float64))
        return float(u[0]), float(u[1])

    def u_of_t(self, sde: SDE, t: Tensor) -> Tensor:
        return self._log_sigma_tilde(sde, t)

    def t_of_u(self, sde: SDE, u: float) -> float:
        t = float(sde.t_from_log_snr(torch.tensor([-2.0 * u], dtype=torch.float64))[0])
        return min(max(t, 0.0), sde.T)

    def to_state(self, sde: SDE, x: Tensor, u: float) -> Tensor:
        return x / coefficients_at(sde, self.t_of_u(sde, u)).gamma

    def to_x(self, sde: SDE, y: Tensor, u: float) -> Tensor:
        return y * coefficients_at(sde, self.t_of_u(sde, u)).gamma

    def log_jacobian(self, sde: SDE, u: float) -> float:
        """log|∂y/∂x| per dimension: −log γ_t (y = x/γ_t)."""
        return -float(torch.log(torch.tensor(coefficients_at(sde, self.t_of_u(sde, u)).gamma)))

    def rhs(self, sde: SDE, score: ScalarScore, y: Tensor, u: float) -> Tensor:
        """dy/du = σ̃ ε(γ y, t), ε = −σ_t ∇log q_t."""
        t = self.t_of_u(sde, u)
        c = coefficients_at(sde, t)
        return (c.sigma / c.gamma) * eps_from_score(score(c.gamma * y, t), c.sigma)

    def __repr__(self) -> str:
        return "ScaledCoordinates()"
