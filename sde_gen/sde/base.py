"""The linear SDE dx = f(t) x dt + g(t) dw and what follows from its Gaussian marginal (§4.1).

A family gives f, g², log γ_t (γ_t: mean coefficient of q(x_t|x0)) and σ_t² on float64 times;
the base class derives sampling, the prior, the reverse-time and probability-flow drifts, the
score/noise/data conversions and the Gaussian bridge q(x_s|x_t, x0) from them.
Schedules are evaluated in float64 and returned in the dtype of ``t``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from sde_gen.sde import conversions

__all__ = [
    "SDE",
    "Coefficients",
    "expand_as",
    "finite_float",
    "check_horizon",
    "check_positive_increasing",
]


def expand_as(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient of shape (B,) to broadcast against x of shape (B, ...)."""
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim)).to(x.dtype)


def finite_float(name: str, value: object) -> float:
    """``float(value)``, or a ValueError naming it unless it is a finite real number (NaN and inf
    would poison every schedule evaluated later)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be a finite real number, not a boolean")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a finite real number") from None
    if not math.isfinite(out):
        raise ValueError(f"{name}={out} must be finite")
    return out


def check_horizon(T: object) -> float:
    """The time horizon T as a float; ValueError naming it unless finite and > 0."""
    out = finite_float("T", T)
    if out <= 0:
        raise ValueError(f"T={out} must be > 0")
    return out


def check_positive_increasing(
    low_name: str, low: object, high_name: str, high: object
) -> tuple[float, float]:
    """(low, high) as floats; ValueError naming the value unless 0 < low < high, both finite."""
    low_f, high_f = finite_float(low_name, low), finite_float(high_name, high)
    if low_f <= 0:
        raise ValueError(f"{low_name}={low_f} must be finite and > 0")
    if low_f >= high_f:
        raise ValueError(f"{low_name}={low_f} must be < {high_name}={high_f}")
    return low_f, high_f


class Coefficients(NamedTuple):
    """f(t), g(t)², γ_t and σ_t at the same times (one boundary check for all four)."""

    f: Tensor
    g2: Tensor
    gamma: Tensor
    sigma: Tensor


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

    def variational_bound(self) -> str | None:
        """The entry of the ``likelihood`` config group that holds this process's own variational
        bound (``conf/likelihood/<entry>.yaml``); None: it has none, only the PF-ODE density."""
        return None

    # -- the contract ---------------------------------------------------------------------------
    validates_t: bool = True  # False on a ``trusted()`` copy

    def trusted(self) -> SDE:
        """This process without the range check of times (a shallow copy): for inner loops whose
        times lie in [0, T] by construction (losses, solvers), where the check's reduction would
        synchronise host and device at every coefficient call. The public API keeps the check."""
        out = copy.copy(self)
        out.validates_t = False
        return out

    def check_t(self, t: Tensor) -> Tensor:
        """Validate times (a tensor in [0, T]) and return them in float64."""
        if not isinstance(t, Tensor):
            raise ValueError(f"t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
        t64 = t.detach().to(torch.float64) if t.requires_grad else t.to(torch.float64)
        if not self.validates_t:
            return t64
        if t64.numel() and (t64.min() < 0 or t64.max() > self.T or torch.isnan(t64).any()):
            bad = t64[(t64 < 0) | (t64 > self.T) | torch.isnan(t64)].flatten()[0].item()
            raise ValueError(f"t={bad} is outside [0, T={self.T}]")
        return t64

    def _out_dtype(self, t: Tensor) -> torch.dtype:
        return t.dtype if t.is_floating_point() else torch.float64

    def _eval(self, fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        return fn(self.check_t(t)).to(self._out_dtype(t))

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

    def coefficients(self, t: Tensor) -> Coefficients:
        """(f, g², γ, σ) at times t, checked once: what a solver tabulates on its grid."""
        t64, dtype = self.check_t(t), self._out_dtype(t)
        return Coefficients(
            self._f(t64).to(dtype),
            self._g2(t64).to(dtype),
            torch.exp(self._log_gamma(t64)).to(dtype),
            self._sigma2(t64).clamp_min(0).sqrt().to(dtype),
        )

    def network_time(self, t: Tensor) -> Tensor:
        """The time input of the ε-network at times t: t itself (a learned schedule gives the
        noise level instead, ``VDMSDE.network_time``)."""
        return t

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

    def x0_from_score(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie's x̂0 = (x + σ_t² ∇log q_t(x)) / γ_t at times t of shape (B,)."""
        c = self.coefficients(t)
        return conversions.x0_from_score(x, score, expand_as(c.gamma, x), expand_as(c.sigma, x))

    def eps_from_score(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """ε̂ = −σ_t ∇log q_t(x) at times t of shape (B,)."""
        return conversions.eps_from_score(score, expand_as(self.sigma(t), x))

    def score_from_eps(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """∇log q_t(x) = −ε̂/σ_t at times t of shape (B,)."""
        return conversions.score_from_eps(eps, expand_as(self.sigma(t), x))

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
