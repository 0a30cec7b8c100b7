"""The first evaluation of a fixed-step solver, at t = T (option ``first_eval``).

``model``: the score is evaluated there like at every other time.

``prior_mean``: it is not. At T the data prediction has barely left the data mean: for
x_T = γ_T x0 + σ_T ε, x̂0(x_T, T) = m_T + O(γ_T/σ_T · Cov x0 · x_T/σ_T), where
m_T = E_{x_T ∼ q_T}[x̂0(x_T, T)], and γ_T/σ_T = √SNR_T is 0.0066 on the linear DDPM chain. The
solver takes x̂0(x, T) ≈ m_T, estimated once for a score from ``PRIOR_MEAN_SAMPLES`` prior draws
(evaluated once; the sampling calls that reuse it do not count them), so N evaluations buy
N + 1 grid times. The price is an error of the first step, γ_{t₁}(1 − e^{−h₁}) (x̂0 − m_T):
first order in that step's h₁ and small by √SNR_T, so the solver still converges (at first order
once the step count is large: worth it at a handful of evaluations, not at fifty). Zhou et al.
(2024)'s analytical first step is the case m_T = 0, exact only for centred data; the calibrated
mean removes that assumption.

``PriorMean.spread`` reports the substitution's own error at T: the RMS distance of the draws'
x̂0 from m_T.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn

__all__ = [
    "FirstEval",
    "PriorMean",
    "PriorMeanCache",
    "PRIOR_MEAN_SAMPLES",
    "calibrate_prior_mean",
    "fingerprint",
]

log = logging.getLogger(__name__)

PRIOR_MEAN_SAMPLES = 256
"""Prior draws of the m_T estimate (its standard error is spread/16), evaluated in chunks of
``PRIOR_MEAN_CHUNK``."""
PRIOR_MEAN_CHUNK = 64


class FirstEval(str, Enum):
    """What a fixed-step solver's first evaluation, at T, is (module docstring)."""

    MODEL = "model"
    PRIOR_MEAN = "prior_mean"

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class PriorMean:
    """m_T (one sample's shape), the RMS distance ``spread`` of the draws' x̂0(x_T, T) from it,
    the number of ``samples`` and the (T, γ_T, σ_T) it was estimated at."""

    x0: Tensor
    spread: float
    samples: int
    at: tuple[float, float, float]


def _time_key(sde: SDE) -> tuple[float, float, float]:
    """(T, γ_T, σ_T): all q_T, and so m_T, depends on besides the data."""
    c = sde.coefficients(torch.tensor([sde.T], dtype=torch.float64))
    return sde.T, float(c.gamma[0]), float(c.sigma[0])


def calibrate_prior_mean(
    sde: SDE, score_fn: ScoreCallable, like: Tensor, samples: int = PRIOR_MEAN_SAMPLES
) -> PriorMean:
    """m_T = mean of x̂0(x_T, T) over ``samples`` draws x_T from the prior (seed 0), shaped like
    one sample of ``like`` in its dtype and device."""
    g = torch.Generator().manual_seed(0)
    x_T = sde.prior_sample((samples, *like.shape[1:]), g, dtype=like.dtype).to(like.device)
    score = ScoreFn(score_fn, sde)
    with torch.no_grad():
        x0 = torch.cat([score.x0(x, sde.T) for x in x_T.split(PRIOR_MEAN_CHUNK)])
    m = x0.mean(0)
    spread = float((x0 - m).flatten(1).pow(2).sum(1).mean().sqrt())
    return PriorMean(m, spread, samples, _time_key(sde))


def fingerprint(score_fn: ScoreCallable) -> tuple[float, ...] | None:
    """For a torch module, Σv and Σv² of each parameter and buffer (a training step or an EMA
    update in place changes them, so its m_T is estimated anew); None for another callable, which
    is then known by identity alone."""
    if not isinstance(score_fn, torch.nn.Module):
        return None
    f64 = torch.float64
    with torch.no_grad():
        tensors = [v for v in score_fn.state_dict().values() if v.is_floating_point()]
        if not tensors:
            return ()
        sums = torch.stack(
            [torch.stack([v.sum(dtype=f64), v.square().sum(dtype=f64)]) for v in tensors]
        )
        return tuple(sums.flatten().cpu().tolist())


class PriorMeanCache:
    """The last m_T a solver estimated, kept for the same score function object (weakly) with
    the same ``fingerprint``, q_T and sample shape, dtype and device; anything else is estimated
    anew."""

    def __init__(self) -> None:
        self._entry: tuple[weakref.ref | None, tuple, PriorMean] | None = None

    def get(self, sde: SDE, score_fn: ScoreCallable, like: Tensor) -> PriorMean:
        key = (
            _time_key(sde),
            tuple(like.shape[1:]),
            like.dtype,
            like.device,
            fingerprint(score_fn),
        )
        if self._entry is not None:
            ref, old_key, found = self._entry
            if ref is not None and ref() is score_fn and old_key == key:
                return found
        found = calibrate_prior_mean(sde, score_fn, like)
        log.info(
            "first_eval=prior_mean: m_T from %d prior draws at T=%g; their x̂0 lie %.3g (RMS) "
            "from it, the substitution's error at T",
            found.samples,
            sde.T,
            found.spread,
        )
        try:
            ref = weakref.ref(score_fn)
        except TypeError:  # not weakly referable: estimated on every call
            ref = None
        self._entry = (ref, key, found)
        return found

    def __getstate__(self) -> dict:
        return {"_entry": None}  # weak references do not pickle; a copy estimates anew

    def __deepcopy__(self, memo: dict) -> PriorMeanCache:
        return PriorMeanCache()
