"""What a grid fit minimises and where it is checked: per-sample squared end-point errors
e_i² = ‖x_i − x_ref,i‖² reduced to one number (``RMS``, ``Trimmed``, ``LogMean``; the config
group ``objective``), and the split of the pilot x_T into a fit part and a validation part
(``validation_split``).

The RMS over a few thousand x_T is dominated by a few trajectories that switch modes (heavy
tails of e_i); ``Trimmed`` and ``LogMean`` weigh the bulk instead. Whatever the objective, a fit
is validated and reported on the plain RMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RMS", "Trimmed", "LogMean", "squared_errors", "validation_split"]


def squared_errors(x: Tensor, x_ref: Tensor) -> Tensor:
    """e_i² = ‖x_i − x_ref,i‖² per sample (float64); inf where x_i is not finite."""
    d = (x.to(torch.float64) - x_ref.to(torch.float64)).flatten(1)
    sq = (d**2).sum(1)
    return torch.where(torch.isfinite(sq), sq, torch.full_like(sq, math.inf))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


@dataclass(frozen=True)
class RMS:
    """√(mean_i e_i²): the RMS end-point error (``metrics.mixtures.endpoint_error``)."""

    def __call__(self, sq: Tensor) -> float:
        return _finite(float(sq.mean().sqrt()))


@dataclass(frozen=True)
class Trimmed:
    """√(mean of e_i² over the n − ⌊q n⌋ smallest): the RMS without the worst q fraction."""

    q: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.q < 1:
            raise ValueError(f"objective.q={self.q} must be in [0, 1) (the fraction dropped)")

    def __call__(self, sq: Tensor) -> float:
        keep = len(sq) - math.floor(self.q * len(sq))
        return _finite(float(sq.sort().values[:keep].mean().sqrt()))


@dataclass(frozen=True)
class LogMean:
    """exp(mean_i log e_i): the geometric mean of the per-sample errors (e_i floored at
    ``floor``), the minimiser of the mean log error."""

    floor: float = 1e-30

    def __call__(self, sq: Tensor) -> float:
        return _finite(float((0.5 * sq.clamp_min(self.floor**2).log().mean()).exp()))


def validation_split(n: int, validation: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit, validation) indices of n pilot x_T: round(validation · n) of them, drawn by a
    permutation seeded by ``seed``, are held out; both parts sorted, disjoint, covering all n.
    ``validation`` = 0: every x_T is fitted on, none held out."""
    if not 0 <= validation < 1:
        raise ValueError(f"validation={validation} must be in [0, 1) (the held-out fraction)")
    n_val = round(validation * n)
    if validation > 0 and (n_val < 2 or n - n_val < 2):
        raise ValueError(
            f"validation={validation} of n={n} pilot x_T leaves {n - n_val} to fit and {n_val} "
            "to validate: each needs >= 2 (more pilot x_T, or validation=0)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
