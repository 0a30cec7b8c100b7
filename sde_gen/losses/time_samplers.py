"""Time samplers for the continuous DSM loss: t ~ r(t) on [t_min, T] with the 1/r(t) correction.

A sampler is called as ``sampler(sde, weighting, n, t_min, generator, device)`` and returns
``(t, coef)`` with t of shape (n,) in float64 and

    coef(t) = λ(t)/σ_t² · u(t)/r(t),   u = 1/(T − t_min) the uniform density,

so that E_{t~r}[coef(t) h(t)] = E_{t~U[t_min,T]}[λ(t)/σ_t² h(t)] for every h: every sampler
estimates the same loss value (survey §4.3; importance sampling as in Song et al. 2021, §4).
λ/σ² is ``Weighting.over_sigma2``. Configs pick a sampler from the group ``loss/time_sampler``
(``uniform``, ``importance``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sde_gen.losses.weighting import Weighting
from sde_gen.sde import SDE

__all__ = ["TimeSampler", "UniformTimeSampler", "ImportanceTimeSampler", "check_t_min"]


def check_t_min(t_min: float, T: float) -> None:
    if not 0 < t_min < T:
        raise ValueError(f"t_min={t_min} must lie in (0, T={T})")


def _uniform(n: int, generator: torch.Generator | None, device) -> Tensor:
    dev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, dtype=torch.float64, device=dev).to(device)


class TimeSampler:
    """Draws (t, coef); see the module docstring for the contract."""

    def __call__(
        self,
        sde: SDE,
        weighting: Weighting,
        n: int,
        t_min: float,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def density(self, sde: SDE, weighting: Weighting, t: Tensor, t_min: float) -> Tensor:
        """r(t) on [t_min, T]."""
        raise NotImplementedError


class UniformTimeSampler(TimeSampler):
    """t ~ U[t_min, T]; coef = λ(t)/σ_t²."""

    def __call__(self, sde, weighting, n, t_min, generator=None, device=None):
        check_t_min(t_min, sde.T)
        t = t_min + (sde.T - t_min) * _uniform(n, generator, device)
        return t, weighting.over_sigma2(sde, t)

    def density(self, sde, weighting, t, t_min):
        return torch.full_like(t, 1.0 / (sde.T - t_min), dtype=torch.float64)

    def __repr__(self) -> str:
        return "UniformTimeSampler()"


class ImportanceTimeSampler(TimeSampler):
    """t ~ r(t) = (λ(t)/σ_t²)/Z on [t_min, T], Z = ∫ λ/σ²; coef = Z/(T − t_min).

    Exact inversion t = F⁻¹(F(t_min) + U·Z) when the weighting gives its antiderivative F
    (σ², likelihood); otherwise r is the piecewise-constant density whose mass on each
    cell of a float64 grid (``grid_size`` cells, geometric near t_min and uniform elsewhere) is the
    trapezoid integral of λ/σ², drawn exactly by inverse CDF, with coef = λ/σ² · u/r for that r —
    unbiased whatever the grid.
    """

    def __init__(self, grid_size: int = 20000):
        if grid_size < 2:
            raise ValueError(f"grid_size={grid_size} must be >= 2")
        self.grid_size = grid_size

    def __repr__(self) -> str:
        return f"ImportanceTimeSampler(grid_size={self.grid_size})"

    def _grid(self, sde: SDE, weighting: Weighting, t_min: float) -> tuple[Tensor, Tensor]:
        half = self.grid_size // 2
        grid = np.unique(
            np.concatenate(
                [np.geomspace(t_min, sde.T, half + 1), np.linspace(t_min, sde.T, half + 1)]
            )
        )
        grid = torch.as_tensor(grid, dtype=torch.float64)
        h = weighting.over_sigma2(sde, grid)
        mass = 0.5 * (h[1:] + h[:-1]) * torch.diff(grid)
        if not torch.isfinite(mass).all() or (mass < 0).any() or mass.sum() <= 0:
            raise ValueError(f"λ(t)/σ_t² of {weighting!r} is not a positive finite density")
        return grid, mass

    def _exact(self, weighting: Weighting, sde: SDE, t_min: float) -> tuple[Tensor, Tensor] | None:
        ends = torch.tensor([t_min, sde.T], dtype=torch.float64)
        F = weighting.antiderivative(sde, ends)
        return None if F is None else (F[0], F[1] - F[0])

    def __call__(self, sde, weighting, n, t_min, generator=None, device=None):
        check_t_min(t_min, sde.T)
        u = _uniform(n, generator, device)  # stays on the device: no host round trip a step
        exact = self._exact(weighting, sde, t_min)
        if exact is not None:
            F0, Z = exact
            t = weighting.inverse_antiderivative(sde, F0 + u * Z).clamp(t_min, sde.T)
            coef = torch.full_like(t, float(Z) / (sde.T - t_min))
            return t.to(device), coef.to(device)
        grid, mass = (a.to(u.device) for a in self._grid(sde, weighting, t_min))
        cdf = torch.cat([mass.new_zeros(1), torch.cumsum(mass, 0)])
        Z = cdf[-1]
        target = u * Z
        k = (torch.searchsorted(cdf, target, right=True) - 1).clamp(0, len(mass) - 1)
        frac = ((target - cdf[k]) / mass[k]).clamp(0, 1)
        t = grid[k] + frac * (grid[k + 1] - grid[k])
        r = mass[k] / (Z * (grid[k + 1] - grid[k]))
        coef = weighting.over_sigma2(sde, t) / ((sde.T - t_min) * r)
        return t.to(device), coef.to(device)

    def density(self, sde, weighting, t, t_min):
        """r(t): exact (λ/σ²)/Z, or the grid's piecewise-constant density."""
        exact = self._exact(weighting, sde, t_min)
        t = t.double()
        if exact is not None:
            return weighting.over_sigma2(sde, t) / exact[1]
        grid, mass = self._grid(sde, weighting, t_min)
        k = (torch.searchsorted(grid, t, right=True) - 1).clamp(0, len(mass) - 1)
        return mass[k] / (mass.sum() * (grid[k + 1] - grid[k]))
