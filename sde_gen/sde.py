"""Forward processes dx = f(t) x dt + g(t) dw and their Gaussian marginals (survey §4.1–4.2).

Every family gives f, g, γ_t (mean coefficient of q(x_t|x0)) and σ_t (its standard deviation);
the base class derives sampling, the prior, the reverse-time and probability-flow drifts and the
Gaussian bridge q(x_s|x_t, x0) from them, so the mathematics lives once.
Schedules are evaluated in float64 and returned in the dtype of ``t``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "LinearSDE",
    "DiscreteVPSDE",
    "Polynomial",
    "expand_as",
]


def expand_as(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient of shape (B,) to broadcast against x of shape (B, ...)."""
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim)).to(x.dtype)


class SDE(ABC):
    """Linear SDE dx = f(t) x dt + g(t) dw on t ∈ [0, T] with marginal N(γ_t x0, σ_t² I)."""

    T: float = 1.0

    # -- the family's closed forms, on float64 tensors of valid times -------------------------
    @abstractmethod
    def _f(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _g2(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _log_gamma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _sigma2(self, t: Tensor) -> Tensor: ...

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, s² I) at t = T (unit-variance data)."""
        t = torch.tensor([self.T], dtype=torch.float64)
        return float(torch.sqrt(torch.exp(2 * self._log_gamma(t)) + self._sigma2(t)))

    # -- the contract ---------------------------------------------------------------------------
    def check_t(self, t: Tensor) -> Tensor:
        """Validate times (a tensor in [0, T]) and return them in float64."""
        if not isinstance(t, Tensor):
            raise ValueError(f"t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
        t64 = t.detach().to(torch.float64) if t.requires_grad else t.to(torch.float64)
        if t64.numel() and (t64.min() < 0 or t64.max() > self.T or torch.isnan(t64).any()):
            bad = t64[(t64 < 0) | (t64 > self.T) | torch.isnan(t64)].flatten()[0].item()
            raise ValueError(f"t={bad} is outside [0, T={self.T}]")
        return t64

    def _eval(self, fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        return fn(self.check_t(t)).to(t.dtype if t.is_floating_point() else torch.float64)

    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient f(t)."""
        return self._eval(self._f, t)

    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t)."""
        return self._eval(lambda s: self._g2(s).clamp_min(0).sqrt(), t)

    def g2(self, t: Tensor) -> Tensor:
        """g(t)²."""
        return self._eval(self._g2, t)

    def gamma(self, t: Tensor) -> Tensor:
        """γ_t = exp(∫₀ᵗ f): mean coefficient of q(x_t|x0)."""
        return self._eval(lambda s: torch.exp(self._log_gamma(s)), t)

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t: standard deviation of q(x_t|x0)."""
        return self._eval(lambda s: self._sigma2(s).clamp_min(0).sqrt(), t)

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = log(γ_t² / σ_t²) (−∞ excluded: use t > 0)."""
        return self._eval(lambda s: 2 * self._log_gamma(s) - torch.log(self._sigma2(s)), t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Inverse of ``log_snr`` (bisection in float64; families override with closed forms)."""
        target = log_snr.to(torch.float64)
        lo = torch.full_like(target, 1e-12)
        hi = torch.full_like(target, self.T)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            val = 2 * self._log_gamma(mid) - torch.log(self._sigma2(mid))
            go_right = val > target  # log-SNR decreases in t
            lo = torch.where(go_right, mid, lo)
            hi = torch.where(go_right, hi, mid)
        return (0.5 * (lo + hi)).to(log_snr.dtype)

    # -- derived -------------------------------------------------------------------------------
    def _check_batch(self, x: Tensor, t: Tensor, name: str = "x") -> None:
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t must have shape (B,) = ({x.shape[0]},) to match {name} of shape "
                f"{tuple(x.shape)}, got {tuple(t.shape)}"
            )

    def marginal_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = γ_t x0 + σ_t ε, ε ~ N(0, I)  (survey eq. for q(x_t|x0))."""
        self._check_batch(x0, t, "x0")
        if noise is None:
            noise = torch.randn_like(x0)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        return expand_as(self.gamma(t), x0) * x0 + expand_as(self.sigma(t), x0) * noise

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x_T ~ N(0, prior_std² I)."""
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I), summed over all but the batch dimension."""
        d = z[0].numel()
        s2 = self.prior_std**2
        sq = z.flatten(1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * s2) - sq / (2 * s2)

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE: f(t) x − g(t)² ∇log q_t(x)  (survey §4.3)."""
        return expand_as(self.f(t), x) * x - expand_as(self.g2(t), x) * score

    def ode_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Probability-flow ODE drift: f(t) x − ½ g(t)² ∇log q_t(x)."""
        return expand_as(self.f(t), x) * x - 0.5 * expand_as(self.g2(t), x) * score

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(γ_{t|s}, σ_{t|s}²) of q(x_t|x_s) = N(γ_t/γ_s x_s, σ_t² − (γ_t/γ_s)² σ_s²), s ≤ t."""
        s64, t64 = self.check_t(s), self.check_t(t)
        gamma_ts = torch.exp(self._log_gamma(t64) - self._log_gamma(s64))
        var_ts = (self._sigma2(t64) - gamma_ts**2 * self._sigma2(s64)).clamp_min(0)
        return gamma_ts.to(t.dtype), var_ts.to(t.dtype)

    def posterior(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_s | x_t, x0) = N(a x_t + b x0, v) for s < t; returns (a, b, v).

        The DDPM posterior (survey §3.1: μ̃_t, β̃_t) for any linear SDE:
        a = γ_{t|s} σ_s²/σ_t², b = γ_s σ_{t|s}²/σ_t², v = σ_{t|s}² σ_s²/σ_t².
        """
        gamma_ts, var_ts = self.transition(s, t)
        s64, t64 = self.check_t(s), self.check_t(t)
        var_s, var_t = self._sigma2(s64).to(t.dtype), self._sigma2(t64).to(t.dtype)
        gamma_s = torch.exp(self._log_gamma(s64)).to(t.dtype)
        return gamma_ts * var_s / var_t, gamma_s * var_ts / var_t, var_ts * var_s / var_t

    def torchsde_forward(self) -> TorchsdeForward:
        """This SDE as a ``torchsde`` object (Itô, diagonal noise) on (batch, channels) tensors."""
        return TorchsdeForward(self)


class TorchsdeForward(torch.nn.Module):
    """Forward SDE with the ``f(t, y)``, ``g(t, y)`` interface of ``torchsde.sdeint``."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde = sde

    def _t(self, t: Tensor, y: Tensor) -> Tensor:
        return t.to(y.dtype).reshape(1).expand(y.shape[0])

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return expand_as(self.sde.f(self._t(t, y)), y) * y

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return expand_as(self.sde.g(self._t(t, y)), y).expand_as(y)


def _check_positive_increasing(low_name: str, low: float, high_name: str, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0:
        raise ValueError(f"{low_name}={low} must be finite and > 0")
    if low >= high:
        raise ValueError(f"{low_name}={low} must be < {high_name}={high}")


class VPSDE(SDE):
    """Variance-preserving SDE: f = −½β(t), g = √β(t), β linear (survey §4.2).

    γ_t = exp(−½∫₀ᵗβ), σ_t² = 1 − γ_t² computed as −expm1(−∫β) so that σ_t is accurate at t → 0.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        _check_positive_increasing("beta_min", beta_min, "beta_max", beta_max)
        if T <= 0:
            raise ValueError(f"T={T} must be > 0")
        self.beta_min, self.beta_max, self.T = float(beta_min), float(beta_max), float(T)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def _int_beta(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = β_min + t (β_max − β_min) / T."""
        return self._eval(self._beta, t)

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self._beta(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self._beta(t)

    def _log_gamma(self, t: Tensor) -> Tensor:
        return -0.5 * self._int_beta(t)

    def _sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self._int_beta(t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = −log(expm1(∫β))."""
        return self._eval(lambda s: -torch.log(torch.expm1(self._int_beta(s))), t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Solve ∫₀ᵗβ = log1p(e^{−λ}) for t (quadratic in t)."""
        b = torch.log1p(torch.exp(-log_snr.to(torch.float64)))
        a2 = 0.5 * (self.beta_max - self.beta_min) / self.T
        if a2 == 0:
            return (b / self.beta_min).to(log_snr.dtype)
        t = 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 4 * a2 * b))
        return t.to(log_snr.dtype)


class SubVPSDE(VPSDE):
    """Sub-VP SDE: f = −½β, g² = β(1 − e^{−2∫β}); σ_t = 1 − e^{−∫β} (Song et al. 2021)."""

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"

    def _g2(self, t: Tensor) -> Tensor:
        return self._beta(t) * -torch.expm1(-2 * self._int_beta(t))

    def _sigma2(self, t: Tensor) -> Tensor:
        return torch.expm1(-self._int_beta(t)) ** 2

    def log_snr(self, t: Tensor) -> Tensor:
        return SDE.log_snr(self, t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return SDE.t_from_log_snr(self, log_snr)


class VESDE(SDE):
    """Variance-exploding SDE: f = 0, σ_t² = σ_min²((σ_max/σ_min)^{2t/T} − 1), g² = dσ_t²/dt.

    This is the exact marginal of the SDE started at t = 0 (σ_0 = 0), not the σ_min-offset
    approximation; the prior is N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        _check_positive_increasing("sigma_min", sigma_min, "sigma_max", sigma_max)
        if T <= 0:
            raise ValueError(f"T={T} must be > 0")
        self.sigma_min, self.sigma_max, self.T = float(sigma_min), float(sigma_max), float(T)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

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

    @property
    def prior_std(self) -> float:
        return self.sigma_max


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
        if T <= 0:
            raise ValueError(f"T={T} must be > 0")
        self.f_fn, self.g_fn, self.T = f, g, float(T)
        grid = np.unique(
            np.concatenate(
                [[0.0], np.geomspace(1e-9 * T, T, grid_size), np.linspace(0, T, grid_size)]
            )
        )
        log_gamma, h = self._integrate(grid)
        f_grid = self._call_np(f, grid)
        g2_grid = self._call_np(g, grid) ** 2
        if not np.all(np.isfinite(g2_grid)) or np.any(g2_grid < 0):
            raise ValueError("g(t)² must be finite on [0, T]")
        self._log_gamma_table = _HermiteTable(grid, log_gamma, f_grid)
        self._h_table = _HermiteTable(grid, h, g2_grid * np.exp(-2 * log_gamma))
        self._prior_std = prior_std

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


class DiscreteVPSDE(SDE):
    """The discrete DDPM chain as a VP SDE: ᾱ(t) log-linear between t_i = i/N, ᾱ(0) = 1.

    At t_i it reproduces the chain exactly (γ_{t_i}² = ᾱ_i, σ_{t_i}² = 1 − ᾱ_i); between nodes
    β(t) is piecewise constant, β(t) = −N log(1 − β_i). Lets every solver run on a discrete
    schedule (linear or cosine) through the same SDE contract.
    """

    def __init__(self, betas: Tensor | np.ndarray):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got {tuple(betas.shape)}")
        if betas.min() <= 0 or betas.max() >= 1:
            raise ValueError(f"betas must lie in (0, 1), got range [{betas.min()}, {betas.max()}]")
        self.betas = betas
        self.N = len(betas)
        self.T = 1.0
        # log ᾱ at nodes 0..N
        self._log_alpha_bar = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)]
        )

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(N={self.N})"

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        pos = t * self.N
        i = pos.floor().clamp(0, self.N - 1).long()
        return i, pos - i

    def _f(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t)
        return 0.5 * self.N * torch.log1p(-self.betas.to(t.device)[i])

    def _g2(self, t: Tensor) -> Tensor:
        return -2 * self._f(t)

    def _log_gamma(self, t: Tensor) -> Tensor:
        i, u = self._segment(t)
        lab = self._log_alpha_bar.to(t.device)
        return 0.5 * (lab[i] + u * (lab[i + 1] - lab[i]))

    def _sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self._log_gamma(t))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Exact inverse: log ᾱ = log sigmoid(λ), then the segment of the piecewise-linear log ᾱ."""
        target = torch.nn.functional.logsigmoid(log_snr.to(torch.float64))
        neg = -self._log_alpha_bar.to(target.device)  # increasing from 0
        i = (torch.searchsorted(neg, -target.contiguous()) - 1).clamp(0, self.N - 1)
        u = (neg[i] + target) / (neg[i] - neg[i + 1])
        return ((i + u.clamp(0, 1)) / self.N).to(log_snr.dtype)

    @property
    def prior_std(self) -> float:
        return 1.0


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
