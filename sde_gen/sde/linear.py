"""Any linear SDE dx = f(t) x dt + g(t) dw with numerically integrated marginals (survey §4.1),
and ``Polynomial``, a config-friendly coefficient for it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from sde_gen.sde.base import SDE, check_horizon, finite_float

__all__ = ["LinearSDE", "Polynomial"]


class _HermiteTable:
    """Values and exact derivatives of a function on a grid; cubic Hermite interpolation."""

    def __init__(self, grid: np.ndarray, values: np.ndarray, slopes: np.ndarray):
        self.grid = torch.tensor(np.array(grid), dtype=torch.float64)
        self.values = torch.tensor(np.array(values), dtype=torch.float64)
        self.slopes = torch.tensor(np.array(slopes), dtype=torch.float64)

    def __call__(self, t: Tensor) -> Tensor:
        grid = self.grid.to(t.device)
        i = torch.searchsorted(grid, t.contiguous(), right=True).clamp(1, len(grid) - 1) - 1
        t0, t1 = grid[i], grid[i + 1]
        h = t1 - t0
        u = (t - t0) / h
        y0, y1 = self.values.to(t.device)[i], self.values.to(t.device)[i + 1]
        m0, m1 = self.slopes.to(t.device)[i] * h, self.slopes.to(t.device)[i + 1] * h
        u2, u3 = u * u, u * u * u
        return (
            (2 * u3 - 3 * u2 + 1) * y0
            + (u3 - 2 * u2 + u) * m0
            + (-2 * u3 + 3 * u2) * y1
            + (u3 - u2) * m1
        )


class LinearSDE(SDE):
    """Any linear SDE dx = f(t) x dt + g(t) dw (survey §4.1) with numerically integrated marginals.

    log γ_t = ∫₀ᵗ f and σ_t² = γ_t² ∫₀ᵗ g(s)²/γ_s² ds = ∫₀ᵗ exp(2∫ₛᵗ f) g(s)² ds, integrated once
    with scipy's ``solve_ivp`` (DOP853, rtol 1e-13) on a grid dense near t = 0 and interpolated by
    cubic Hermite polynomials with the exact derivatives f and g²/γ².

    ``f`` and ``g`` map a float64 tensor of times to a tensor of the same shape.
    """

    def __init__(
        self,
        f: Callable[[Tensor], Tensor],
        g: Callable[[Tensor], Tensor],
        T: float = 1.0,
        prior_std: float | None = None,
        grid_size: int = 2048,
    ):
        for name, fn in (("f", f), ("g", g)):
            if not callable(fn):
                raise ValueError(
                    f"{name}={fn!r} must be a callable of t (e.g. sde_gen.sde.Polynomial)"
                )
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
            raise ValueError(f"grid_size={grid_size!r} must be an integer >= 2")
        if prior_std is not None and finite_float("prior_std", prior_std) <= 0:
            raise ValueError(f"prior_std={prior_std} must be > 0")
        self.f_fn, self.g_fn, self.T = f, g, check_horizon(T)
        grid = np.unique(
            np.concatenate(
                [[0.0], np.geomspace(1e-9 * T, T, grid_size), np.linspace(0, T, grid_size)]
            )
        )
        f_grid = self._call_np(f, grid)
        g2_grid = self._call_np(g, grid) ** 2
        if not np.all(np.isfinite(f_grid)):
            raise ValueError(f"f(t) must be finite on [0, T={self.T}]")
        if not np.all(np.isfinite(g2_grid)) or np.any(g2_grid < 0):
            raise ValueError(f"g(t)² must be finite on [0, T={self.T}]")
        log_gamma, h = self._integrate(grid)
        self._log_gamma_table = _HermiteTable(grid, log_gamma, f_grid)
        self._h_table = _HermiteTable(grid, h, g2_grid * np.exp(-2 * log_gamma))
        self._prior_std = None if prior_std is None else float(prior_std)

    @staticmethod
    def _call_np(fn: Callable[[Tensor], Tensor], t: np.ndarray) -> np.ndarray:
        out = fn(torch.as_tensor(np.asarray(t, dtype=np.float64)))
        return np.broadcast_to(np.asarray(torch.as_tensor(out, dtype=torch.float64)), np.shape(t))

    def _integrate(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            f = self._call_np(self.f_fn, np.array([t]))[0]
            g = self._call_np(self.g_fn, np.array([t]))[0]
            return np.array([f, g * g * np.exp(-2 * y[0])])

        sol = solve_ivp(
            rhs, (0.0, self.T), [0.0, 0.0], method="DOP853", t_eval=grid, rtol=1e-13, atol=1e-20
        )
        if not sol.success:
            raise ValueError(f"could not integrate the SDE coefficients: {sol.message}")
        return sol.y[0], sol.y[1]

    def _f(self, t: Tensor) -> Tensor:
        return torch.as_tensor(self.f_fn(t), dtype=torch.float64).expand_as(t)

    def _g2(self, t: Tensor) -> Tensor:
        return torch.as_tensor(self.g_fn(t), dtype=torch.float64).expand_as(t) ** 2

    def _log_gamma(self, t: Tensor) -> Tensor:
        return self._log_gamma_table(t)

    def _sigma2(self, t: Tensor) -> Tensor:
        return torch.exp(2 * self._log_gamma_table(t)) * self._h_table(t)

    @property
    def prior_std(self) -> float:
        return SDE.prior_std.fget(self) if self._prior_std is None else self._prior_std


class Polynomial:
    """p(t) = Σ_k c_k t^k (or √p(t) with ``sqrt=True``): a config-friendly coefficient for
    ``LinearSDE``."""

    def __init__(self, coeffs: list[float], sqrt: bool = False):
        if len(coeffs) == 0:
            raise ValueError("coeffs must be non-empty")
        self.coeffs, self.sqrt = [float(c) for c in coeffs], sqrt

    def __call__(self, t: Tensor) -> Tensor:
        out = torch.zeros_like(t, dtype=torch.float64)
        for c in reversed(self.coeffs):
            out = out * t + c
        if self.sqrt:
            if (out < 0).any():
                raise ValueError(f"polynomial {self.coeffs} is negative on the requested times")
            out = out.sqrt()
        return out
