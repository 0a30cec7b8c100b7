"""The variational bounds of the DDPM chain and of VDM as likelihoods (config group ``likelihood``).

Each is a ``likelihood.base.Likelihood`` with ``bound = True``: its log p is minus the bound, a
lower bound on the model's log-likelihood (survey §3.1; Kingma et al. 2021). They need the trained
``ScoreModel`` as ``score_fn`` (its ε network and, for DDPM, its variance), not a bare score. An
SDE names its own bound (``SDE.variational_bound``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sde_gen.likelihood.base import Generator, Likelihood
from sde_gen.losses.discrete import schedule_of, vlb
from sde_gen.losses.vdm import vdm_vlb
from sde_gen.sde import SDE, DiscreteVPSDE
from sde_gen.sde.score_fn import ScoreCallable

__all__ = ["DDPMBound", "VDMBound"]


def _model_of(score_fn: ScoreCallable, entry: str) -> Any:
    """``score_fn`` as the trained ScoreModel a bound needs (its ε network), else a ValueError."""
    if not hasattr(score_fn, "eps_and_extra") or not hasattr(score_fn, "sde"):
        raise ValueError(
            f"likelihood={entry} needs a trained ScoreModel (checkpoint=<step_*.pt>), "
            f"got score_fn={type(score_fn).__name__}"
        )
    return score_fn


class DDPMBound(Likelihood):
    """L_vlb = L_T + Σ_t L_{t−1} of a discrete DDPM model (``losses.vlb``), T network calls a
    batch; its decoder L_0 integrates over the bins of [−1, 1], so it needs data on levels and
    bits/dim = L_vlb/(D ln 2), an upper bound on −log₂ P(x)/D with no dequantization.

    ``large_variance``: Σ_t = β_t in place of β̃_t for a fixed-variance model; ``log_variance``:
    log Σ_t for t = 1..T replacing the model's (e.g. ``analytic_chain_log_variance``)."""

    bound = True
    discrete_only = True

    def __init__(self, large_variance: bool = False, log_variance: Tensor | None = None):
        self.large_variance = bool(large_variance)
        self.log_variance = log_variance

    def __repr__(self) -> str:
        given = "None" if self.log_variance is None else "<given>"
        return f"DDPMBound(large_variance={self.large_variance}, log_variance={given})"

    def levels_log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, num_bins: int, generator: Generator
    ) -> tuple[Tensor, int]:
        """(−L_vlb in nats per sample of x on ``num_bins`` levels, T): log P(x) of the levels
        bounded by the chain with its decoder (``bits_per_dim`` takes one draw: no noise)."""
        if not isinstance(sde, DiscreteVPSDE):
            raise ValueError(f"VLB needs a discrete DDPM model (sde=ddpm_*), got sde={sde!r}")
        model = _model_of(score_fn, "ddpm_vlb")
        nats = vlb(
            model, schedule_of(model), x, num_bins, generator, self.large_variance,
            self.log_variance,
        )  # fmt: skip
        return -nats.cpu(), sde.N

    def log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        raise ValueError(
            "likelihood=ddpm_vlb needs discrete data (num_bins): its decoder integrates over bins"
        )


class VDMBound(Likelihood):
    """VDM's continuous-time bound (``losses.vdm_vlb``, Kingma et al. 2021 eqs. 11–17): L_∞
    averaged over ``time_draws`` stratified times per sample, one network call on the tiled
    batch; discrete data are dequantized with each time draw (bits/dim of the levels)."""

    bound = True

    def __init__(self, time_draws: int = 16):
        if isinstance(time_draws, bool) or not isinstance(time_draws, int) or time_draws < 1:
            raise ValueError(f"time_draws={time_draws!r} must be an integer >= 1")
        self.time_draws = time_draws

    def __repr__(self) -> str:
        return f"VDMBound(time_draws={self.time_draws})"

    def log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        model = _model_of(score_fn, "vdm_vlb")
        return -vdm_vlb(model, x, None, generator, self.time_draws).to(torch.float64), 1

    def levels_log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, num_bins: int, generator: Generator
    ) -> tuple[Tensor, int]:
        """Minus the bound of levels x, dequantized with each of the ``time_draws`` draws."""
        nats = vdm_vlb(_model_of(score_fn, "vdm_vlb"), x, num_bins, generator, self.time_draws)
        return -nats.cpu().to(torch.float64), 1
