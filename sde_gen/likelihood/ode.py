"""Exact likelihood through the probability-flow ODE, and bits/dim of discrete data (survey §4.3).

The PF-ODE dx/dt = f(t) x − ½ g(t)² s(x, t) transports q_{t_min} onto q_T. By the instantaneous
change of variables (Chen et al. 2018; Song et al. 2021, eq. 39)

    d log p_t(x_t)/dt = −∇·drift(x_t, t),
    log p_{t_min}(x) = log π(x_T) + ∫_{t_min}^T ∇·drift(x_t, t) dt,

where π is the prior; the state [x, ∫∇·drift] goes from t_min to T with scipy's ``solve_ivp``.
The divergence is exact or Hutchinson's estimate (``likelihood.divergence``).

What is measured is the model density of x *at t_min*, not at t = 0: the ODE starts from
q_{t_min} = (γ_{t_min} ·)_# q_0 ∗ N(0, σ_{t_min}² I). For smooth data with per-dimension scale s the
bias is O(D σ_{t_min}²/s²) nats, plus D log γ_{t_min} (≈ −½ D β_min t_min for VP): at the default
t_min = 1e-5 with the VP SDE both are below 1e-4 nats per dimension for s ≥ 0.1. For discrete data
the bias is absorbed by dequantization (``bits_per_dim``): uniform noise of a bin's width dwarfs
σ_{t_min}. The prior π is the model's (``likelihood.priors``): by default the SDE's N(0, s² I) moved
to the mean that the score implies at T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from sde_gen.likelihood.base import (
    Likelihood,
    dequantize,
    nats_to_bits_per_dim,
)
from sde_gen.likelihood.divergence import (
    GaussianProbe,
    Probe,
    RademacherProbe,
    exact_divergence,
    hutchinson_divergence,
)
from sde_gen.likelihood.priors import FixedPrior, MatchedPrior, Prior
from sde_gen.runtime.progress import progress_bar
from sde_gen.sde import SDE
from sde_gen.sde.coordinates import AngleCoordinates, TimeCoordinates
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn

__all__ = [
    "METHODS",
    "Probe",
    "RademacherProbe",
    "GaussianProbe",
    "exact_divergence",
    "hutchinson_divergence",
    "PFODELikelihood",
    "ode_log_likelihood",
    "dequantize",
    "nats_to_bits_per_dim",
    "bits_per_dim",
]

METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
"""The integrators of scipy's ``solve_ivp`` that ``method`` may name."""


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor of shape (B, ...), got {shape}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")


def _check_options(rtol, atol, logp_atol, t_min, num_probes, probe, method, prior) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a solve_ivp method; use one of {METHODS}")
    tolerances = (("rtol", rtol, ""), ("atol", atol, ""), ("logp_atol", logp_atol, " (nats)"))
    for name, value, unit in (*tolerances, ("t_min", t_min, "")):
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name}={value} must be a finite number > 0{unit}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes={num_probes!r} must be an integer >= 1")
    if not callable(probe):
        raise ValueError(
            f"probe={probe!r} must be a probe object such as RademacherProbe() or GaussianProbe() "
            "(config group likelihood/probe)"
        )
    if not callable(prior):
        raise ValueError(
            f"prior={prior!r} must be a prior object such as MatchedPrior() or StandardPrior() "
            "(config group likelihood/prior)"
        )


class PFODELikelihood(Likelihood):
    """log p_{t_min}(x) through the probability-flow ODE (survey §4.3; ``likelihood=pf_ode``).

    log p_{t_min}(x) = log π(x_T) + ∫_{t_min}^T ∇·[f x − ½ g² s(x, t)] dt,
    integrated by default for z = x/√(γ_t² + σ_t²) over φ = arctan σ̃_t (``AngleCoordinates``,
    smooth where β(t) is not): there dz/dφ = F = (ε̂ − sin φ z)/cos φ, and with the change of
    variables log p_x = log p_z + D log|∂z/∂x|,

        log p_x(x) = log π(x_T) + D (ℓ(φ_{t_min}) − ℓ(φ_T)) + ∫ ∇_z·F dφ,
        ℓ = log|∂z/∂x| = −½ log(γ² + σ²).

    ``coordinates=TimeCoordinates()`` integrates in t as written, ``ScaledCoordinates()`` in
    y = x/γ over log σ̃. With the exact score the answer is log q_{t_min}(x) + log π(x_T)
    − log q_T(x_T): the prior mismatch is the model's, not the integrator's. ``prior`` builds π
    from the model (``likelihood.priors``): ``MatchedPrior()`` when None, the SDE's prior moved to
    the mean the score implies at T (one evaluation; mismatch O(γ_T²)), or ``StandardPrior()``,
    N(0, s² I), whose mismatch is γ_T (E x0)·x_T/s² to first order, about √(2/π) γ_T |E x0|/s
    nats; ``FixedPrior(logp)`` takes a given log density of x_T (e.g. the exact log q_T).

    Tolerances: ``rtol`` for the whole state, ``atol`` for the coordinates' state (z, of unit
    scale, by default) and ``logp_atol`` in nats for ∫∇·F. That integral starts at 0, where rtol
    gives it nothing, so under one atol its first steps were held about 40× tighter than its last
    (docs/results.md, "Likelihood coordinates", "Tolerances": 0.8× the evaluations of atol =
    logp_atol = 1e-5, a MAE of about 1e-3 nats on 16-D mixtures).
    The score is evaluated in the dtype of ``x``; the ODE state lives in float64. The divergence
    is exact (``exact_trace``) or Hutchinson's with ``num_probes`` probes per sample drawn once
    from the call's generator by ``probe`` (``RademacherProbe()`` when None, or
    ``GaussianProbe()``). One NFE is one call of ``score_fn`` on the whole batch. ``method`` is
    one of ``METHODS``; a non-finite score, drift or divergence stops the solve with a
    ValueError naming t.
    """

    def __init__(
        self,
        exact_trace: bool = False,
        rtol: float = 1e-5,
        atol: float = 3e-5,
        logp_atol: float = 1e-3,
        method: str = "RK45",
        t_min: float = 1e-5,
        num_probes: int = 1,
        probe: Probe | None = None,
        prior: Prior | None = None,
        coordinates: TimeCoordinates | None = None,
        progress: bool = False,
    ):
        probe = RademacherProbe() if probe is None else probe
        prior = MatchedPrior() if prior is None else prior
        _check_options(rtol, atol, logp_atol, t_min, num_probes, probe, method, prior)
        self.exact_trace, self.method, self.t_min = bool(exact_trace), method, t_min
        self.rtol, self.atol, self.logp_atol = rtol, atol, logp_atol
        self.num_probes, self.probe, self.prior = num_probes, probe, prior
        self.coordinates = AngleCoordinates() if coordinates is None else coordinates
        self.progress = bool(progress)

    def __repr__(self) -> str:
        names = ("exact_trace", "rtol", "atol", "logp_atol", "method", "t_min", "num_probes")
        opts = [f"{k}={getattr(self, k)!r}" for k in names]
        opts += [f"{k}={getattr(self, k)!r}" for k in ("probe", "prior", "coordinates")]
        return f"PFODELikelihood({', '.join(opts)})"

    def record(self) -> dict[str, Any]:
        """The options (``probe`` by class name, ``prior`` and ``coordinates`` by repr)."""
        names = ("exact_trace", "num_probes", "rtol", "atol", "logp_atol", "method", "t_min")
        return {
            **super().record(),
            **{k: getattr(self, k) for k in names},
            "probe": type(self.probe).__name__,
            "prior": repr(self.prior),
            "coordinates": repr(self.coordinates),
        }

    def log_likelihood(
        self, sde: SDE, score_fn: ScoreCallable, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, int]:
        """(log p_{t_min}(x) per sample in nats, float64; the number of score evaluations)."""
        _check_x(x)
        if not 0 < self.t_min < sde.T:
            raise ValueError(f"t_min={self.t_min} must lie in (0, T={sde.T})")
        probes = None
        if not self.exact_trace:
            probes = self.probe((self.num_probes, *x.shape), generator, x.dtype, x.device)
        score = ScoreFn.of(score_fn, sde)
        prior_logp, nfe = self.prior(sde, score, x)
        before = score.nfe
        y_T, int_div = self._solve(sde, score, x, probes)
        nfe_ode = score.nfe - before
        coords, u_T, u_min = self.coordinates, *self.coordinates.bounds(sde, self.t_min)
        log_prior = prior_logp(coords.to_x(sde, y_T, u_T)).to(torch.float64)
        jacobian = x[0].numel() * (coords.log_jacobian(sde, u_min) - coords.log_jacobian(sde, u_T))
        return log_prior + jacobian + int_div, nfe + nfe_ode

    def _derivative(
        self, sde: SDE, score: ScoreFn, y: Tensor, u: float, probes: Tensor | None
    ) -> np.ndarray:
        """[dy/du, ∇·(dy/du)] at u, flattened to float64; a ValueError naming t if not finite."""
        with torch.enable_grad():
            y.requires_grad_(True)
            dy = self.coordinates.rhs(sde, score, y, u)
            if probes is None:
                div = exact_divergence(dy, y)
            else:
                div = hutchinson_divergence(dy, y, probes)
        out = torch.cat([dy.detach().flatten(), div.detach()]).to(torch.float64).cpu().numpy()
        if not np.isfinite(out).all():
            t = self.coordinates.t_of_u(sde, u)
            raise ValueError(f"the PF-ODE drift or its divergence is not finite at t={t:.6g}")
        return out

    def _solve(
        self, sde: SDE, score: ScoreFn, x: Tensor, probes: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """(y_T, ∫∇·F) from u_min to u_T, with solve_ivp on the float64 state; the score
        (counted and checked by ``ScoreFn``) runs in x's dtype."""
        coords, (shape, dtype, device) = self.coordinates, (x.shape, x.dtype, x.device)
        n_x, u_T, u_min = x.numel(), *coords.bounds(sde, self.t_min)
        bar = progress_bar(
            self.progress, total=abs(u_T - u_min), desc="PF-ODE", unit="u", leave=False
        )

        def rhs(u: float, state: np.ndarray) -> np.ndarray:
            y = torch.as_tensor(state[:n_x], device=device).reshape(shape).to(dtype)
            bar.update(min(abs(u - u_min), bar.total) - bar.n)
            return self._derivative(sde, score, y, u, probes)

        y0 = coords.to_state(sde, x.detach().to(torch.float64), u_min)
        state0 = np.concatenate([y0.cpu().flatten().numpy(), np.zeros(shape[0])])
        atols = np.concatenate(
            [np.full(n_x, float(self.atol)), np.full(shape[0], float(self.logp_atol))]
        )
        try:
            sol = solve_ivp(
                rhs, (u_min, u_T), state0, method=self.method, rtol=self.rtol, atol=atols
            )
        finally:
            bar.close()
        if not sol.success:
            raise ValueError(
                f"PF-ODE integration failed ({self.method}, rtol={self.rtol}): {sol.message}"
            )
        end = torch.as_tensor(sol.y[:, -1], dtype=torch.float64, device=device)
        return end[:n_x].reshape(shape), end[n_x:]


def _pf_ode_likelihood(
    prior_logp: Callable[[Tensor], Tensor] | None, **options: Any
) -> PFODELikelihood:
    """``PFODELikelihood(**options)``; ``prior_logp``, a log density of x_T, stands for
    ``prior=FixedPrior(prior_logp)``."""
    if prior_logp is not None:
        options["prior"] = FixedPrior(prior_logp)
    return PFODELikelihood(**options)


def ode_log_likelihood(
    sde: SDE,
    score_fn: ScoreCallable,
    x: Tensor,
    exact_trace: bool = False,
    *,
    generator: torch.Generator | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    **options: Any,
) -> tuple[Tensor, int]:
    """(log p_{t_min}(x) per sample in nats, NFE): ``PFODELikelihood(exact_trace, **options)(sde,
    score_fn, x, generator)`` in one call; ``prior_logp``, a log density of x_T, stands for
    ``prior=FixedPrior(prior_logp)``."""
    likelihood = _pf_ode_likelihood(prior_logp, exact_trace=exact_trace, **options)
    result = likelihood(sde, score_fn, x, generator)
    return result.logp, result.nfe


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreCallable,
    x: Tensor,
    num_bins: int,
    num_draws: int = 1,
    generator: torch.Generator | None = None,
    **ode_kwargs: Any,
) -> tuple[Tensor, int]:
    """(Bits/dim per sample of data x on ``num_bins`` levels in [−1, 1], total NFE):
    ``PFODELikelihood(**ode_kwargs).bits_per_dim(...)``, ``num_draws`` dequantizations stacked
    in one solve; noise and probes from ``generator``."""
    likelihood = _pf_ode_likelihood(ode_kwargs.pop("prior_logp", None), **ode_kwargs)
    result = likelihood.bits_per_dim(sde, score_fn, x, num_bins, num_draws, generator)
    return result.bpd, result.nfe
