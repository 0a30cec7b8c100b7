"""Time grids T = t_0 > t_1 > … > t_N = t_min for fixed-step reverse-time solvers.

Each grid is a small class whose ``__call__(sde, steps, t_min)`` returns the N + 1 times in
float64, strictly decreasing. Configs pick one from the group ``solver/grid`` (``uniform``,
``quadratic``, ``logsnr``, ``karras``, ``trailing``), e.g. ``solver/grid=karras solver.grid.rho=5``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from sde_gen.sde import SDE, DiscreteVPSDE

__all__ = ["Grid", "UniformGrid", "QuadraticGrid", "LogSNRGrid", "KarrasGrid", "TrailingGrid"]


def _t(value: float) -> Tensor:
    return torch.tensor([value], dtype=torch.float64)


class Grid(ABC):
    """Base: a decreasing grid of ``steps + 1`` times from sde.T to t_min (0 < t_min < T, checked
    by the solver that calls it).

    ``standalone``: the grid needs nothing but (sde, steps, t_min), so any fixed-step solver can
    take it (it is then checked for monotonicity and is a starting grid of ``fit_grid``).
    """

    standalone: ClassVar[bool] = True

    def __call__(self, sde: SDE, steps: int, t_min: float) -> Tensor:
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        times = self.times(sde, u, float(t_min))
        times[0], times[-1] = sde.T, t_min
        if not bool((times[1:] < times[:-1]).all()):
            raise ValueError(f"{type(self).__name__} gave a non-decreasing grid for steps={steps}")
        return times

    @abstractmethod
    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        """Times at fractions u ∈ [0, 1] of the way from T (u = 0) to t_min (u = 1)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UniformGrid(Grid):
    """t_i = T − i (T − t_min)/N."""

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        return sde.T + (t_min - sde.T) * u


class QuadraticGrid(Grid):
    """t_i = t_min + (T − t_min)(1 − i/N)²: dense near the data (Song et al. 2021a, DDIM)."""

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        return t_min + (sde.T - t_min) * (1 - u) ** 2


class LogSNRGrid(Grid):
    """Uniform in the log-SNR λ_t = log(γ_t²/σ_t²) (Lu et al. 2022, DPM-Solver)."""

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        lam_T, lam_min = sde.log_snr(_t(sde.T)), sde.log_snr(_t(t_min))
        return sde.t_from_log_snr(lam_T + (lam_min - lam_T) * u)


class KarrasGrid(Grid):
    """EDM noise levels σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, σ̃ = σ_t/γ_t
    (Karras et al. 2022, eq. 5), mapped back to t through the log-SNR λ = −2 log σ̃."""

    def __init__(self, rho: float = 7.0):
        if not rho > 0:
            raise ValueError(f"rho={rho} must be > 0")
        self.rho = float(rho)

    def __repr__(self) -> str:
        return f"KarrasGrid(rho={self.rho})"

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        s_max = torch.exp(-0.5 * sde.log_snr(_t(sde.T)))
        s_min = torch.exp(-0.5 * sde.log_snr(_t(t_min)))
        inv = 1.0 / self.rho
        sig = (s_max**inv + u * (s_min**inv - s_max**inv)) ** self.rho
        return sde.t_from_log_snr(-2 * torch.log(sig))


class TrailingGrid(Grid):
    """Uniform over the chain's own steps, from T down to 0 (diffusers' timestep_spacing=
    "trailing"): on a ``DiscreteVPSDE`` of N steps t_i = round(N − i N/steps)/N (round half to
    even, as NumPy), else t_i = T (1 − i/steps). The last time, 0, becomes t_min; solvers with
    ``final_step='zero'`` land on 0 from t_{N−1} (= 1/steps of the way from 0 to T)."""

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        if isinstance(sde, DiscreteVPSDE):
            return torch.round(sde.N * (1 - u)) / sde.N
        return sde.T * (1 - u)
