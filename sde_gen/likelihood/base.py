"""The likelihood as an object: ``likelihood(sde, score_fn, x, generator)`` → log p per sample.

Every entry of the ``likelihood`` config group (``pf_ode``, ``ddpm_vlb``, ``vdm_vlb``) is a
``Likelihood``: called on continuous data it returns ``LikelihoodResult`` (log p in nats, float64,
the score evaluations, bits/dim); ``bits_per_dim`` measures data on ``num_bins`` levels in
[−1, 1], by default through uniform dequantization (survey §4.3). A variational bound declares
``bound = True``: its log p is a lower bound (an ELBO), so its bits/dim an upper bound.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from sde_gen.data.base import dequantize_levels
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable

Generator = torch.Generator | None

__all__ = [
    "LikelihoodResult",
    "Likelihood",
    "dequantize",
    "nats_to_bits_per_dim",
    "logp_of_bits_per_dim",
    "check_levels",
    "Generator",
]


@dataclass
class LikelihoodResult:
    """log p per sample in nats (float64; of the [−1, 1]-scaled variable, for discrete data
    averaged over dequantizations), the score evaluations (one NFE: one call on the whole batch)
    and bits/dim per sample (``nats_to_bits_per_dim``; in units of the levels for discrete data)."""

    logp: Tensor
    nfe: int
    bpd: Tensor


def dequantize(x: Tensor, num_bins: int, generator: torch.Generator | None = None) -> Tensor:
    """y = x + Δ(u − ½), u ~ U(0, 1)^D, Δ = 2/(num_bins − 1): uniform noise over x's bin."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return dequantize_levels(x, u, num_bins)


def nats_to_bits_per_dim(logp: Tensor, dim: int, num_bins: int | None = None) -> Tensor:
    """−log p in bits per dimension, in the units of the original ``num_bins`` levels.

    Data levels k ∈ {0..K−1} are stored as x = a k − 1, a = 2/(K−1) (``scale_to_unit``). With
    dequantized levels v = k + u (u ∈ [0,1), bins of unit width) and y = a(v − ½) − 1 the model's
    variable, p_v(v) = p_y(y) |dy/dv|^D = p_y(y) a^D, so

        bpd = −(log p_y(y) + D log a) / (D ln 2) = (−log p_y(y) − D log(2/(K−1))) / (D ln 2),

    and by Jensen's inequality E_u[bpd] ≥ −log₂ P(k)/D for the discrete model P(k) = ∫ p_v(k+u) du.
    Uniform p_y on [−1 − a/2, 1 + a/2]^D gives exactly log₂ K. ``num_bins=None``: continuous data,
    bpd = −log p/(D ln 2).
    """
    if dim < 1:
        raise ValueError(f"dim={dim} must be >= 1")
    log_scale = 0.0 if num_bins is None else dim * math.log(2.0 / (num_bins - 1))
    return -(logp + log_scale) / (dim * math.log(2.0))


def logp_of_bits_per_dim(bpd: Tensor, dim: int, num_bins: int) -> Tensor:
    """log p_y(y) = −(bpd · D ln 2 + D log(2/(K−1))), the inverse of ``nats_to_bits_per_dim``."""
    return -(bpd * dim * math.log(2.0) + dim * math.log(2.0 / (num_bins - 1)))


def check_levels(x: Tensor, num_bins: int, num_draws: int = 1) -> None:
    """A ValueError naming ``num_bins``, ``num_draws`` or x's range when x is not data on levels."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins={num_bins!r} must be an integer >= 2")
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws={num_draws!r} must be an integer >= 1")
    if isinstance(x, Tensor) and x.numel() and (x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"x must lie in [-1, 1], got range [{x.min():.4g}, {x.max():.4g}]")


class Likelihood(ABC):
    """log p(x) of the model ``(sde, score_fn)``; subclasses write ``log_likelihood``."""

    #: True where log p is a lower bound (a variational bound), False where it is the density
    bound: ClassVar[bool] = False
    #: True for a discrete decoder: data on levels only (``bits_per_dim``, one draw, no noise)
    discrete_only: ClassVar[bool] = False
    #: the time whose marginal log q_t the likelihood measures (the PF-ODE's t_min; 0: the data)
    t_min: float = 0.0

    def record(self) -> dict[str, Any]:
        """What this likelihood was built with, for a run's summary."""
        return {"likelihood": repr(self)}

    @abstractmethod
    def log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """(log p per sample in nats, float64; score evaluations) of continuous x."""

    def __call__(
        self,
        sde: SDE,
        score_fn: ScoreCallable,
        x: Tensor,
        generator: torch.Generator | None = None,
    ) -> LikelihoodResult:
        """log p(x) per sample, its NFE and bpd = −log p/(D ln 2) of continuous data x."""
        logp, nfe = self.log_likelihood(sde, score_fn, x, generator)
        return LikelihoodResult(logp, nfe, nats_to_bits_per_dim(logp, x[0].numel()))

    def levels_log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, num_bins: int, generator: Generator
    ) -> tuple[Tensor, int]:
        """(log p per sample, NFE) of x on ``num_bins`` levels: of x dequantized once
        (``dequantize``); a ``discrete_only`` decoder gives log P(x) of the levels themselves."""
        return self.log_likelihood(sde, score_fn, dequantize(x, num_bins, generator), generator)

    def bits_per_dim(
        self,
        sde: SDE,
        score_fn: ScoreCallable,
        x: Tensor,
        num_bins: int,
        num_draws: int = 1,
        generator: torch.Generator | None = None,
    ) -> LikelihoodResult:
        """Data x on ``num_bins`` levels in [−1, 1]: bits/dim of the levels per sample, averaged
        over ``num_draws`` uniform dequantizations (an upper bound on −log₂ P(x)/D by Jensen),
        all in one stacked batch of num_draws·B samples; noise and probes from ``generator``."""
        check_levels(x, num_bins, num_draws)
        draws = 1 if self.discrete_only else num_draws
        tiled = x.repeat(draws, *([1] * (x.ndim - 1)))
        logp, nfe = self.levels_log_likelihood(sde, score_fn, tiled, num_bins, generator)
        dim, bins = x[0].numel(), None if self.discrete_only else num_bins
        bpd = nats_to_bits_per_dim(logp, dim, bins).reshape(draws, x.shape[0]).mean(0)
        return LikelihoodResult(logp_of_bits_per_dim(bpd, dim, num_bins), nfe, bpd)
