"""Exact likelihood through the probability-flow ODE, and bits/dim of discrete data (survey §4.3).

The PF-ODE dx/dt = f(t) x − ½ g(t)² s(x, t) transports q_{t_min} onto q_T. By the instantaneous
change of variables (Chen et al. 2018; Song et al. 2021, eq. 39)

    d log p_t(x_t)/dt = −∇·drift(x_t, t),
    log p_{t_min}(x) = log π(x_T) + ∫_{t_min}^T ∇·drift(x_t, t) dt,

where π is the prior; the state [x, ∫∇·drift] goes from t_min to T with scipy's ``solve_ivp``.
The divergence is exact (autograd, one backward pass per dimension) or Hutchinson's unbiased
estimate E_ε[εᵀ (∂drift/∂x) ε] with probes ε fixed along the whole path (Grathwohl et al. 2019).

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

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from sde_gen.data.base import dequantize_levels
from sde_gen.likelihood.priors import MatchedPrior, Prior
from sde_gen.runtime.progress import progress_bar
from sde_gen.sde import SDE
from sde_gen.sde.coordinates import AngleCoordinates, TimeCoordinates
from sde_gen.sde.score_fn import ScoreFn as CountedScoreFn

__all__ = [
    "ScoreFn",
    "METHODS",
    "Probe",
    "RademacherProbe",
    "GaussianProbe",
    "exact_divergence",
    "hutchinson_divergence",
    "ode_log_likelihood",
    "dequantize",
    "nats_to_bits_per_dim",
    "bits_per_dim",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
"""The integrators of scipy's ``solve_ivp`` that ``method`` may name."""
Probe = Callable[
    [tuple[int, ...], torch.Generator | None, torch.dtype, torch.device | str | None], Tensor
]
"""Draws Hutchinson probes ε with E εεᵀ = I: ``probe(shape, generator, dtype, device)``."""


class RademacherProbe:
    """ε with i.i.d. entries ±1 (E εεᵀ = I; zero variance when the Jacobian is diagonal)."""

    def __call__(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * bits - 1).to(dtype)

    def __repr__(self) -> str:
        return "RademacherProbe()"


class GaussianProbe:
    """ε ~ N(0, I)."""

    def __call__(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> Tensor:
        return torch.randn(shape, generator=generator, device=device).to(dtype)

    def __repr__(self) -> str:
        return "GaussianProbe()"


def exact_divergence(drift: Tensor, x: Tensor) -> Tensor:
    """∇·drift = Σ_i ∂drift_i/∂x_i per sample, by one backward pass per dimension."""
    flat = drift.flatten(1)
    div = torch.zeros(x.shape[0], dtype=drift.dtype, device=drift.device)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
        div = div + grad.flatten(1)[:, i]
    return div


def hutchinson_divergence(drift: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """(1/P) Σ_p ε_pᵀ (∂drift/∂x) ε_p per sample (Hutchinson 1989); probes: (P, *x.shape)."""
    div = torch.zeros(x.shape[0], dtype=drift.dtype, device=drift.device)
    for eps in probes:
        (vjp,) = torch.autograd.grad((drift * eps).sum(), x, retain_graph=True)
        div = div + (vjp * eps).flatten(1).sum(1)
    return div / probes.shape[0]


def _check_options(
    sde: SDE, x: Tensor, rtol, atol, logp_atol, t_min, num_probes, probe, method, prior=None
) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a solve_ivp method; use one of {METHODS}")
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor of shape (B, ...), got {shape}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if not rtol > 0:
        raise ValueError(f"rtol={rtol} must be > 0")
    if not atol > 0:
        raise ValueError(f"atol={atol} must be > 0")
    if not logp_atol > 0:
        raise ValueError(f"logp_atol={logp_atol} must be > 0 (nats)")
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min={t_min} must lie in (0, T={sde.T})")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes={num_probes!r} must be an integer >= 1")
    if not callable(probe):
        raise ValueError(
            f"probe={probe!r} must be a probe object such as RademacherProbe() or GaussianProbe() "
            "(config group probe)"
        )
    if prior is not None and not callable(prior):
        raise ValueError(
            f"prior={prior!r} must be a prior object such as MatchedPrior() or StandardPrior() "
            "(config group prior)"
        )


def ode_log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    exact_trace: bool = False,
    rtol: float = 1e-5,
    atol: float = 3e-5,
    logp_atol: float = 1e-3,
    method: str = "RK45",
    t_min: float = 1e-5,
    num_probes: int = 1,
    probe: Probe | None = None,
    generator: torch.Generator | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    prior: Prior | None = None,
    progress: bool = False,
    coordinates: TimeCoordinates | None = None,
) -> tuple[Tensor, int]:
    """log p_{t_min}(x) per sample in nats (float64) and the number of score evaluations.

    log p_{t_min}(x) = log π(x_T) + ∫_{t_min}^T ∇·[f x − ½ g² s(x, t)] dt  (survey §4.3),
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
    nats. ``prior_logp``, a log density of x_T, replaces both (e.g. the exact log q_T).

    Tolerances: ``rtol`` for the whole state, ``atol`` for the coordinates' state (z, of unit
    scale, by default) and ``logp_atol`` in nats for ∫∇·F. That integral starts at 0, where rtol
    gives it nothing, so under one atol its first steps were held about 40× tighter than its last
    (docs/results.md, "Likelihood coordinates", "Tolerances": 0.8× the evaluations of atol =
    logp_atol = 1e-5, a MAE of about 1e-3 nats on 16-D mixtures).
    The score is evaluated in the dtype of ``x``; the ODE state lives in float64. ``probe``
    (``RademacherProbe()`` when None, or ``GaussianProbe()``, any ``Probe``) draws ``num_probes``
    probes per sample once from ``generator`` (Hutchinson only). One NFE is one call of
    ``score_fn`` on the whole batch. ``method`` is one of ``METHODS``; a non-finite score, drift
    or divergence stops the solve with a ValueError naming t.
    """
    probe = RademacherProbe() if probe is None else probe
    coords = AngleCoordinates() if coordinates is None else coordinates
    _check_options(sde, x, rtol, atol, logp_atol, t_min, num_probes, probe, method, prior)
    shape, dtype, device = x.shape, x.dtype, x.device
    batch, n_x, dim = shape[0], x.numel(), x[0].numel()
    probes = None
    if not exact_trace:
        probes = probe((num_probes, *shape), generator, dtype, device)
    prior_nfe = 0
    if prior_logp is None:
        prior_logp, prior_nfe = (MatchedPrior() if prior is None else prior)(sde, score_fn, x)
    u_T, u_min = coords.bounds(sde, t_min)
    bar = progress_bar(progress, total=abs(u_T - u_min), desc="PF-ODE", unit="u", leave=False)

    score = CountedScoreFn(score_fn, sde)

    def rhs(u: float, state: np.ndarray) -> np.ndarray:
        y = torch.as_tensor(state[:n_x], device=device).reshape(shape).to(dtype)
        with torch.enable_grad():
            y.requires_grad_(True)
            dy = coords.rhs(sde, score, y, u)
            div = exact_divergence(dy, y) if exact_trace else hutchinson_divergence(dy, y, probes)
        bar.update(min(abs(u - u_min), bar.total) - bar.n)
        out = torch.cat([dy.detach().flatten(), div.detach()]).to(torch.float64).cpu().numpy()
        if not np.isfinite(out).all():
            t = coords.t_of_u(sde, u)
            raise ValueError(f"the PF-ODE drift or its divergence is not finite at t={t:.6g}")
        return out

    y0 = coords.to_state(sde, x.detach().to(torch.float64), u_min)
    state0 = np.concatenate([y0.cpu().flatten().numpy(), np.zeros(batch)])
    atols = np.concatenate([np.full(n_x, float(atol)), np.full(batch, float(logp_atol))])
    try:
        sol = solve_ivp(rhs, (u_min, u_T), state0, method=method, rtol=rtol, atol=atols)
    finally:
        bar.close()
    if not sol.success:
        raise ValueError(f"PF-ODE integration failed ({method}, rtol={rtol}): {sol.message}")
    end = torch.as_tensor(sol.y[:, -1], dtype=torch.float64, device=device)
    y_T, int_div = end[:n_x].reshape(shape), end[n_x:]
    x_T = coords.to_x(sde, y_T, u_T)
    log_prior = prior_logp(x_T).to(torch.float64)
    jacobian = dim * (coords.log_jacobian(sde, u_min) - coords.log_jacobian(sde, u_T))
    return log_prior + jacobian + int_div, prior_nfe + score.nfe


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


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    num_bins: int,
    num_draws: int = 1,
    generator: torch.Generator | None = None,
    **ode_kwargs,
) -> tuple[Tensor, int]:
    """Bits/dim per sample of data x on ``num_bins`` levels in [−1, 1], and the total NFE.

    Averages ``nats_to_bits_per_dim`` of the PF-ODE log-likelihood over ``num_draws`` uniform
    dequantizations (an upper bound on the discrete NLL, ``nats_to_bits_per_dim``), all solved as
    one stacked batch of num_draws·B samples. Dequantization noise and Hutchinson probes both come
    from ``generator``; ``ode_kwargs`` (``probe``, ``num_probes``, ``rtol`` …) go to
    ``ode_log_likelihood``.
    """
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins={num_bins!r} must be an integer >= 2")
    if not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws={num_draws!r} must be an integer >= 1")
    if isinstance(x, Tensor) and x.numel() and (x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"x must lie in [-1, 1], got range [{x.min():.4g}, {x.max():.4g}]")
    y = dequantize(x.repeat(num_draws, *([1] * (x.ndim - 1))), num_bins, generator)
    logp, nfe = ode_log_likelihood(sde, score_fn, y, generator=generator, **ode_kwargs)
    bpd = nats_to_bits_per_dim(logp, x[0].numel(), num_bins)
    return bpd.reshape(num_draws, x.shape[0]).mean(0), nfe
