"""Time conventions: what a network receives as its time input at SDE time t.

Networks of other codebases were trained on other clocks: a discrete chain's index (DDPM,
iDDPM, diffusers), t scaled by 999 (score_sde's VP models), the noise level σ (NCSN, score_sde's
VE models), log σ, or EDM's c_noise = ¼ ln σ̃. Each convention maps (sde, t) to that input; σ̃ is
σ_t/γ_t, the noise level of x/γ (for VE SDEs σ_t itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.sde import SDE

__all__ = ["NetworkTime", "SDETime", "ScaledTime", "DiscreteIndex", "Sigma", "LogSigma", "EDMNoise"]


class NetworkTime:
    """t itself, in t's dtype; subclasses map it to another clock."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SDETime(NetworkTime):
    """The SDE's own convention, ``sde.network_time(t)``: t (a learned VDM schedule gives its
    noise level instead). The default, and what sde_gen's own networks are trained on."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return sde.network_time(t)


class ScaledTime(NetworkTime):
    """``scale · t + shift`` (score_sde's VP networks: scale 999)."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        _finite("scale", scale)
        _finite("shift", shift)
        self.scale, self.shift = float(scale), float(shift)

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return self.scale * t + self.shift


class DiscreteIndex(ScaledTime):
    """The index of a discrete chain of ``steps`` nodes: k = N t − offset. sde_gen's chain node
    n sits at t = n/N; diffusers' timestep k is node k + 1 (``offset = 1``); between nodes the
    index is fractional."""

    def __init__(self, steps: int = 1000, offset: float = 1.0):
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps={steps!r} is invalid: need an integer >= 1")
        super().__init__(scale=float(steps), shift=-float(offset))
        self.steps, self.offset = steps, float(offset)

    def __repr__(self) -> str:
        return f"DiscreteIndex(steps={self.steps}, offset={self.offset})"


class Sigma(NetworkTime):
    """σ̃ = σ_t/γ_t (NCSN and score_sde's VE networks take σ)."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return _sigma_tilde(sde, t)


class LogSigma(NetworkTime):
    """log σ̃."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return _sigma_tilde(sde, t).log()


class EDMNoise(NetworkTime):
    """EDM's c_noise = ¼ ln σ̃ (Karras et al. 2022, Table 1)."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return 0.25 * _sigma_tilde(sde, t).log()


def _sigma_tilde(sde: SDE, t: Tensor) -> Tensor:
    """σ_t/γ_t, computed in float64 and returned in t's dtype."""
    s = t.to(torch.float64)
    return (sde.sigma(s) / sde.gamma(s)).to(t.dtype)


def _finite(key: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"{key}={value!r} is invalid: need a finite number")
