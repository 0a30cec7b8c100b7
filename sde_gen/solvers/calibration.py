"""Γ_t = E_{q_t} ‖ε_θ(x_t, t)‖²/d by Monte Carlo on data (Bao et al. 2022, eq. 9), and its cache.

x_t = γ_t x0 + σ_t ε with x0 from the data (the training set of a checkpoint, exact samples of a
mixture) and ε ~ N(0, I); the same M data samples serve every time, each time draws its own noise.
These evaluations calibrate a solver once; they are not the sampling NFE. A calibration is keyed
by the score's source, the grid times with γ_t and σ_t there (what q_t depends on), M, the seed and
the dtype; ``load``/``save`` keep it as a JSON file whose stored key must match the asked one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from sde_gen.runtime import atomic_write
from sde_gen.sde import SDE
from sde_gen.sde.conversions import eps_from_score
from sde_gen.solvers.base import CountedScore, ScoreFn

__all__ = ["CalibrationKey", "Calibration", "estimate_ms_eps", "load", "save", "Data"]

log = logging.getLogger(__name__)

FORMAT = 1

Data = Tensor | Callable[[int, torch.Generator], Tensor]
"""Samples x0 (N, ...) to draw M of without replacement, or ``sample(n, generator)``."""


@dataclass(frozen=True)
class CalibrationKey:
    """What Γ_t depends on: the score (``source``: a name, or None for an unnamed score, which is
    cached only in memory), q_t at the grid ``times`` (γ_t, σ_t), ``mc_samples``, ``seed``,
    ``dtype``."""

    source: str | None
    times: tuple[float, ...]
    gamma: tuple[float, ...]
    sigma: tuple[float, ...]
    mc_samples: int
    seed: int
    dtype: str

    @classmethod
    def of(
        cls, sde: SDE, times: Tensor, source: str | None, mc_samples: int, seed: int, dtype
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
    score_fn: ScoreFn,
    data: Data,
    key: CalibrationKey,
    batch: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Calibration:
    """Γ_t = mean over M samples of ‖ε_θ(x_t, t)‖²/d, ε_θ = −σ_t s_θ, at each of ``key.times``
    (from T down), with standard error std/√M; ⌈M/batch⌉ score evaluations a time."""
    start = time.perf_counter()
    score = CountedScore(score_fn)
    g_eps = torch.Generator().manual_seed(key.seed + 1)
    means, errors = [], []
    for t in key.times:
        total = total_sq = 0.0
        for x0 in _x0_batches(data, key.mc_samples, batch, key.seed):
            x0 = x0.to(device=device, dtype=dtype)
            noise = torch.randn(x0.shape, generator=g_eps, dtype=torch.float64)
            t_vec = torch.full((len(x0),), t, dtype=dtype, device=x0.device)
            xt = sde.marginal_sample(x0, t_vec, noise.to(x0))
            sigma = float(sde.sigma(torch.tensor([t], dtype=torch.float64))[0])
            eps = eps_from_score(score(xt, t_vec), sigma)
            per = eps.to(torch.float64).flatten(1).pow(2).mean(1)
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
    values that are not a Γ ≥ 0 with a finite error for each time."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        if stored.get("format") != FORMAT:
            raise ValueError(f"format {stored.get('format')!r} is not {FORMAT}")
        if stored.get("key") != json.loads(json.dumps(asdict(key))):
            raise ValueError("its key differs from the one asked for")
        ms_eps, se = stored["ms_eps"], stored["ms_eps_se"]
        values = [float(v) for v in (*ms_eps, *se)]
        if len(ms_eps) != len(key.times) or len(se) != len(key.times):
            raise ValueError(f"{len(ms_eps)} values for {len(key.times)} times")
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError("a value is negative or not finite")
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
