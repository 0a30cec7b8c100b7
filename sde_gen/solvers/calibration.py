"""Γ_t = E_{q_t} ‖E[ε | x_t]‖²/d by Monte Carlo on data (Bao et al. 2022), and its cache.

x_t = γ_t x0 + σ_t ε with x0 from the data (the training set of a checkpoint, exact samples of a
mixture) and ε ~ N(0, I); the same M data samples serve every time, each time draws its own noise.
Two estimators (``Estimator``):

residual (default): Γ̂_t = 1 − mean ‖ε − ε_θ(x_t, t)‖²/d. For the exact ε_θ = E[ε | x_t] it has
    the same mean as eps_norm (E‖ε‖² = d), but it never subtracts two numbers near 1: at high
    noise 1 − Γ_t ≈ γ_t²/σ_t² · Var(x0) is ~1e-5 while eps_norm's Monte Carlo error is ~1e-3,
    so eps_norm's 1 − Γ̂ there is noise (and clipped at 0). For an imperfect ε_θ, 1 − Γ̂ is its
    denoising error and σ*² becomes β̃ + c² E‖x0 − x̂0‖²/d, the KL-optimal variance for the
    network's own mean (Bao et al. 2022b, "optimal covariance with imperfect mean").
eps_norm: Γ̂_t = mean ‖ε_θ(x_t, t)‖²/d, the paper's estimate (Bao et al. 2022, eq. 9).

These evaluations calibrate a solver once; they are not the sampling NFE. A calibration is keyed
by the score's source, the grid times with γ_t and σ_t there (what q_t depends on), M, the seed,
the dtype, the estimator and the sde_gen and torch versions that made it; ``load``/``save`` keep it
as a JSON file whose stored key must match the asked one (a file of another release is recomputed,
with a warning naming it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from sde_gen.runtime.files import atomic_write
from sde_gen.runtime.progress import progress_bar
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn

__all__ = [
    "CalibrationKey",
    "Calibration",
    "Estimator",
    "estimate_ms_eps",
    "load",
    "save",
    "Data",
]

log = logging.getLogger(__name__)

FORMAT = 2


class Estimator(str, Enum):
    """How Γ_t is estimated from (x0, ε, ε_θ(x_t, t)) draws (see the module docstring)."""

    RESIDUAL = "residual"
    EPS_NORM = "eps_norm"

    def per_sample(self, eps_theta: Tensor, eps: Tensor) -> Tensor:
        """The per-sample term whose mean is Γ̂_t: 1 − ‖ε − ε_θ‖²/d, or ‖ε_θ‖²/d."""
        if self is Estimator.EPS_NORM:
            return eps_theta.flatten(1).pow(2).mean(1)
        return 1.0 - (eps - eps_theta).flatten(1).pow(2).mean(1)

    def valid(self, ms_eps: float) -> bool:
        """Whether a stored Γ̂ is possible: ≥ 0 for eps_norm, ≤ 1 for residual."""
        return ms_eps >= 0 if self is Estimator.EPS_NORM else ms_eps <= 1


Data = Tensor | Callable[[int, torch.Generator], Tensor]
"""Samples x0 (N, ...) to draw M of without replacement, or ``sample(n, generator)``."""


def versions() -> str:
    """The sde_gen and torch versions, part of every calibration key: a release that changes
    the estimate or the network code recomputes it."""
    import sde_gen

    return f"sde_gen {sde_gen.__version__}, torch {torch.__version__}"


@dataclass(frozen=True)
class CalibrationKey:
    """What Γ_t depends on: the score (``source``: a name, or None for an unnamed score, which is
    cached only in memory), q_t at the grid ``times`` (γ_t, σ_t), ``mc_samples``, ``seed``,
    ``dtype``, the ``estimator`` and the ``versions`` of sde_gen and torch (``versions()``)."""

    source: str | None
    times: tuple[float, ...]
    gamma: tuple[float, ...]
    sigma: tuple[float, ...]
    mc_samples: int
    seed: int
    dtype: str
    estimator: str = Estimator.RESIDUAL.value
    versions: str = ""

    @classmethod
    def of(
        cls,
        sde: SDE,
        times: Tensor,
        source: str | None,
        mc_samples: int,
        seed: int,
        dtype,
        estimator: Estimator | str = Estimator.RESIDUAL,
    ) -> CalibrationKey:
        c = sde.coefficients(times.to(torch.float64))
        return cls(
            source,
            tuple(times.tolist()),
            tuple(c.gamma.tolist()),
            tuple(c.sigma.tolist()),
            mc_samples,
            seed,
            str(dtype).removeprefix("torch."),
            Estimator(estimator).value,
            versions(),
        )

    def digest(self) -> str:
        """SHA-256 of the key as JSON: the cache file's name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def same_process(self, sde: SDE, times: Tensor) -> bool:
        """Whether ``sde`` on ``times`` is the q_t this key was estimated for."""
        if tuple(times.tolist()) != self.times:
            return False
        if not self.times:
            return True
        c = sde.coefficients(times.to(torch.float64))
        return torch.allclose(
            torch.stack([c.gamma, c.sigma]),
            torch.tensor([self.gamma, self.sigma], dtype=torch.float64),
            rtol=1e-12,
            atol=0,
        )


@dataclass(frozen=True)
class Calibration:
    """Γ_t (``ms_eps``) and its Monte Carlo standard error at ``key.times``; ``nfe`` and
    ``seconds`` spent on it (0 when it came from a cache), ``origin``: computed, memory or disk."""

    key: CalibrationKey
    ms_eps: tuple[float, ...]
    ms_eps_se: tuple[float, ...]
    nfe: int
    seconds: float
    origin: str = "computed"

    def at(self, t: float) -> float:
        """Γ_t at a grid time t."""
        return self.ms_eps[self.key.times.index(t)]

    def reused(self, origin: str) -> Calibration:
        """This calibration as found in a cache: nothing spent."""
        return replace(self, nfe=0, seconds=0.0, origin=origin)


def _x0_batches(data: Data, n: int, batch: int, seed: int):
    """The same M = n data samples, in batches, on every call with this seed."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(data, Tensor):
        if len(data) < n:
            raise ValueError(f"mc_samples={n} exceeds the {len(data)} data samples given")
        index = torch.randperm(len(data), generator=g)[:n]
        for i in range(0, n, batch):
            yield data[index[i : i + batch]]
    elif callable(data):
        for i in range(0, n, batch):
            yield data(min(batch, n - i), g)
    else:
        raise ValueError(
            f"data must be a tensor of samples or sample(n, generator), got {data!r:.80}"
        )


@torch.no_grad()
def estimate_ms_eps(
    sde: SDE,
    score_fn: ScoreCallable,
    data: Data,
    key: CalibrationKey,
    batch: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Calibration:
    """Γ̂_t by ``key.estimator`` over M samples (ε_θ = −σ_t s_θ) at each of ``key.times`` (from T
    down), with standard error std/√M; ⌈M/batch⌉ score evaluations a time (``progress``: a bar
    over the times)."""
    start = time.perf_counter()
    score = ScoreFn(score_fn, sde)
    g_eps = torch.Generator().manual_seed(key.seed + 1)
    estimator = Estimator(key.estimator)
    means, errors = [], []
    for t in progress_bar(progress, iterable=key.times, desc="Γ_t calibration", unit=" times"):
        total = total_sq = 0.0
        for x0 in _x0_batches(data, key.mc_samples, batch, key.seed):
            x0 = x0.to(device=device, dtype=dtype)
            noise = torch.randn(x0.shape, generator=g_eps, dtype=torch.float64).to(x0)
            t_vec = torch.full((len(x0),), t, dtype=dtype, device=x0.device)
            xt = sde.marginal_sample(x0, t_vec, noise)
            eps = score.eps(xt, t).to(torch.float64)
            per = estimator.per_sample(eps, noise.to(eps))
            total, total_sq = total + float(per.sum()), total_sq + float(per.pow(2).sum())
        m = key.mc_samples
        mean = total / m
        means.append(mean)
        errors.append(math.sqrt(max(total_sq / m - mean**2, 0.0) / (m - 1)))
    seconds = time.perf_counter() - start
    return Calibration(key, tuple(means), tuple(errors), score.nfe, seconds)


def cache_path(folder: str | Path, key: CalibrationKey, prefix: str) -> Path:
    """``<folder>/<prefix>_<first 20 hex digits of the key's digest>.json``."""
    return Path(folder) / f"{prefix}_{key.digest()[:20]}.json"


def load(path: Path, key: CalibrationKey) -> Calibration | None:
    """The calibration stored at ``path`` for ``key``; None when there is none, or (with a
    warning naming the file and the fault) when the file is unreadable, of another key, or holds
    values that are not a finite Γ̂ its estimator can give with an error ≥ 0 for each time."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        if stored.get("format") != FORMAT:
            raise ValueError(f"format {stored.get('format')!r} is not {FORMAT}")
        if stored.get("key") != json.loads(json.dumps(asdict(key))):
            raise ValueError("its key differs from the one asked for")
        ms_eps, se = stored["ms_eps"], stored["ms_eps_se"]
        if len(ms_eps) != len(key.times) or len(se) != len(key.times):
            raise ValueError(f"{len(ms_eps)} values for {len(key.times)} times")
        estimator = Estimator(key.estimator)
        if not all(math.isfinite(float(v)) and estimator.valid(float(v)) for v in ms_eps):
            raise ValueError(f"a Γ is not finite or not possible for estimator={key.estimator}")
        if not all(math.isfinite(float(v)) and float(v) >= 0 for v in se):
            raise ValueError("a standard error is negative or not finite")
        nfe, seconds = int(stored["nfe"]), float(stored["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("ignoring the calibration cache %s (%s): recomputing it", path, e)
        return None
    return Calibration(key, tuple(ms_eps), tuple(se), nfe, seconds).reused("disk")


def save(path: Path, calibration: Calibration) -> Path:
    """Write ``calibration`` as JSON, atomically."""
    record = {
        "format": FORMAT,
        "key": asdict(calibration.key),
        "ms_eps": list(calibration.ms_eps),
        "ms_eps_se": list(calibration.ms_eps_se),
        "nfe": calibration.nfe,
        "seconds": calibration.seconds,
    }
    text = json.dumps(record, indent=1)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
