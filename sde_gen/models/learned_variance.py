"""Learned-variance conventions: how a network's extra output v becomes log Σ of the reverse step
p(x_s | x_t) = N(μ̃, Σ I), s < t, given the step's own β = σ²_{t|s} and β̃ = σ²_{t|s} σ_s²/σ_t²
(on a strided grid: 1 − ᾱ_t/ᾱ_s and (1 − ᾱ_s)/(1 − ᾱ_t) β, as iDDPM's respacing and diffusers do).

Nichol & Dhariwal (2021, eq. 15) interpolate log Σ = f log β + (1 − f) log β̃ with a fraction f of
v: sde_gen's own networks use f = sigmoid(v) (``SigmoidRange``, the default); their code and
diffusers' ``variance_type="learned_range"`` use f = (v + 1)/2, unclamped (``LinearRange``).
diffusers' ``variance_type="learned"`` reads v as Σ itself, whatever the step (``Direct``).
A ``ScoreModel`` carries one (``model/variance``); the hybrid loss and the ancestral sampler call
its ``log_variance`` and never know which it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LearnedVariance", "Interpolated", "SigmoidRange", "LinearRange", "Direct"]


class LearnedVariance:
    """A convention: ``log_variance(v, log β, log β̃)`` = log Σ of the step, shaped like v."""

    def log_variance(
        self, v: Tensor, log_beta: Tensor | float, log_beta_tilde: Tensor | float
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Interpolated(LearnedVariance):
    """log Σ = f log β + (1 − f) log β̃, f = ``fraction(v)`` (Nichol & Dhariwal 2021, eq. 15)."""

    def fraction(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def log_variance(
        self, v: Tensor, log_beta: Tensor | float, log_beta_tilde: Tensor | float
    ) -> Tensor:
        frac = self.fraction(v)
        return frac * log_beta + (1 - frac) * log_beta_tilde


class SigmoidRange(Interpolated):
    """f = sigmoid(v) ∈ (0, 1): sde_gen's own networks (the default; f = ½ at v = 0)."""

    def fraction(self, v: Tensor) -> Tensor:
        return torch.sigmoid(v)


class LinearRange(Interpolated):
    """f = (v + 1)/2, unclamped (Nichol & Dhariwal's code; diffusers' ``learned_range``)."""

    def fraction(self, v: Tensor) -> Tensor:
        return (v + 1) / 2


class Direct(LearnedVariance):
    """Σ = v, the output is the variance itself (diffusers' ``learned``): log Σ = log v, whatever
    β and β̃. A ValueError naming the smallest value when some v ≤ 0 (no Σ to draw with)."""

    def log_variance(
        self, v: Tensor, log_beta: Tensor | float, log_beta_tilde: Tensor | float
    ) -> Tensor:
        low = float(v.detach().min())
        if not low > 0:
            raise ValueError(
                f"model.variance=Direct: the network's variance output Σ = {low:.6g} is not > 0 "
                "(Direct reads the extra channels as Σ itself)"
            )
        return torch.log(v)
