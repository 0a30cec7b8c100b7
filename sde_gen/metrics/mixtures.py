"""Sample-quality metrics against an exact distribution: MMD², the NLL gap, ODE end-point error.

All work in float64. Each metric is an estimator with Monte Carlo noise of its own; the floor a
solver can reach at a given sample size is measured by ``monte_carlo_floor`` (exact vs exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from sde_gen.data.gaussian_mixture import GaussianMixture
from sde_gen.sde import SDE

__all__ = [
    "median_bandwidth",
    "mmd2_unbiased",
    "nll_gap",
    "endpoint_error",
    "mixture_flow",
    "MonteCarloFloor",
    "monte_carlo_floor",
    "MMD_SAMPLES",
    "exact_metrics",
    "is_point_mass",
]

MMD_SAMPLES = 2000
"""At most this many samples enter the O(n²) MMD estimate of ``exact_metrics``."""


def _as_2d64(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (n >= 2, ...), got {shape}")
    x = x.detach().flatten(1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def median_bandwidth(reference: Tensor, max_points: int = 1000) -> float:
    """Median heuristic: the median pairwise Euclidean distance among (the first
    ``max_points`` of) the reference samples."""
    x = _as_2d64(reference, "reference")[:max_points]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    return float(d[iu[0], iu[1]].median())


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: float | Sequence[float]) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with the kernel Σ_h exp(−‖x−y‖²/(2h²)).

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i,x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i,y_j) − 2/(mn) Σ k(x_i,y_j);
    its expectation is the population MMD², so it is ≈ 0 (and may be negative) for equal laws.
    """
    x, y = _as_2d64(x, "x"), _as_2d64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has dimension {x.shape[1]} but y has dimension {y.shape[1]}")
    hs = [float(bandwidths)] if isinstance(bandwidths, (int, float)) else list(bandwidths)
    if not hs or any(not (h > 0 and math.isfinite(h)) for h in hs):
        raise ValueError(f"bandwidths must be finite and > 0, got {bandwidths}")
    m, n = len(x), len(y)
    dxx, dyy, dxy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    total = 0.0
    for h in hs:
        kxx, kyy = torch.exp(-dxx / (2 * h * h)), torch.exp(-dyy / (2 * h * h))
        kxy = torch.exp(-dxy / (2 * h * h))
        total += float(
            (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean()
        )
    return total


def nll_gap(density: GaussianMixture, generated: Tensor, reference: Tensor) -> float:
    """E_gen[−log p(x)] − E_data[−log p(x)] under the exact density p (nats per sample).

    For generated samples from q it estimates KL(q‖p) + H(q) − H(p): zero when q = p.
    """
    gen, ref = _as_2d64(generated, "generated"), _as_2d64(reference, "reference")
    return float(-density.log_prob(gen).mean() + density.log_prob(ref).mean())


def endpoint_error(x: Tensor, x_ref: Tensor) -> float:
    """RMS over samples of the per-sample Euclidean error: √(mean_i ‖x_i − x_ref,i‖²).

    ``x`` and ``x_ref`` are end points of ODE solves started from the same x_T (paired rows).
    """
    x, x_ref = _as_2d64(x, "x"), _as_2d64(x_ref, "x_ref")
    if x.shape != x_ref.shape:
        raise ValueError(f"x shape {tuple(x.shape)} != x_ref shape {tuple(x_ref.shape)}")
    return float(((x - x_ref) ** 2).sum(1).mean().sqrt())


def mixture_flow(
    mixture: GaussianMixture,
    sde: SDE,
    x_T: Tensor,
    t_min: float,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    method: str = "DOP853",
) -> tuple[Tensor, int]:
    """Reference end point at t_min of the probability-flow ODE from x_T at T, and its NFE.

    Integrated in EDM variables (Karras et al. 2022, eq. 4), y = x/γ_t, u = log σ̃_t with
    σ̃ = σ_t/γ_t: dy/du = −σ̃² ∇_y log p(y; σ̃), p(·; σ̃) = Σ_k w_k N(μ_k, s_k² + σ̃²). This is the
    same ODE as dx/dt = f x − ½ g² ∇log q_t, but smooth in u for any schedule (the DDPM chain's
    piecewise-constant β(t) does not create kinks), and independent of the solvers' code.
    """
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min={t_min} must lie in (0, T={sde.T})")
    ends = torch.tensor([sde.T, t_min], dtype=torch.float64)
    gamma, sigma = sde.gamma(ends), sde.sigma(ends)
    u_span = tuple(torch.log(sigma / gamma).tolist())
    x = _as_2d64(x_T, "x_T")
    n, d = x.shape
    if d != mixture.dim:
        raise ValueError(f"x_T has dimension {d}, the mixture has {mixture.dim}")
    log_w, means, var0 = torch.log(mixture.weights), mixture.means, mixture.stds**2
    nfe = 0

    def rhs(u: float, y_flat: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        s2 = math.exp(2 * u)
        y = torch.from_numpy(y_flat).reshape(n, d)
        var = var0 + s2
        diff = y[:, None, :] - means
        logp = log_w - 0.5 * (diff**2 / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
        score = -(torch.softmax(logp, dim=1)[..., None] * diff / var).sum(1)
        return (-s2 * score).reshape(-1).numpy()

    y0 = (x / gamma[0]).reshape(-1).numpy()
    sol = solve_ivp(rhs, u_span, y0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise ValueError(f"solve_ivp({method}) failed: {sol.message}")
    return gamma[1] * torch.from_numpy(sol.y[:, -1]).reshape(n, d), nfe


@dataclass(frozen=True)
class MonteCarloFloor:
    """A metric between independent exact sample sets of the solver's sizes, over seeds."""

    mean: float
    std: float
    rms: float
    values: tuple[float, ...]


def monte_carlo_floor(
    metric: Callable[[Tensor, Tensor], float],
    sample: Callable[[int, torch.Generator], Tensor],
    n: int,
    n_ref: int | None = None,
    seeds: Sequence[int] = tuple(range(5)),
    base_seed: int = 10_000,
) -> MonteCarloFloor:
    """The metric between two exact sets of sizes (n, n_ref) for each seed → mean, std, RMS.

    A solver whose metric is within this spread is indistinguishable from exact sampling at
    this sample size. For the unbiased MMD² the mean is ≈ 0 and the RMS is the floor's scale.
    """
    if n < 2 or (n_ref is not None and n_ref < 2):
        raise ValueError(f"sample sizes must be >= 2, got n={n}, n_ref={n_ref}")
    if len(seeds) < 2:
        raise ValueError(f"need at least two seeds for a spread, got {list(seeds)}")
    n_ref = n if n_ref is None else n_ref
    values = []
    for s in seeds:
        g = torch.Generator().manual_seed(base_seed + 2 * int(s))
        a = sample(n, g)
        b = sample(n_ref, g)
        values.append(float(metric(a, b)))
    v = torch.tensor(values, dtype=torch.float64)
    return MonteCarloFloor(
        mean=float(v.mean()),
        std=float(v.std()),
        rms=float(v.pow(2).mean().sqrt()),
        values=tuple(values),
    )


def exact_metrics(mixture: GaussianMixture, x0: Tensor, seed: int) -> dict[str, float]:
    """NLL of the samples under the exact density, the NLL gap to fresh data, MMD², and each
    metric's Monte Carlo floor: its RMS between two exact sample sets of the same sizes (MMD² on
    the first ``MMD_SAMPLES``).
    A mixture with a point mass (a zero std) has no density at t = 0: no metrics."""
    if is_point_mass(mixture):
        return {}
    x = x0.detach().cpu().to(torch.float64).flatten(1)
    n, m = len(x), min(len(x), MMD_SAMPLES)
    ref = mixture.sample64(n, torch.Generator().manual_seed(1_000_003 + seed))
    h = median_bandwidth(ref)

    def gap(a: Tensor, b: Tensor) -> float:
        return nll_gap(mixture, a, b)

    def mmd2(a: Tensor, b: Tensor) -> float:
        return mmd2_unbiased(a, b, h)

    return {
        "nll": float(-mixture.log_prob(x).mean()),
        "nll_data": float(-mixture.log_prob(ref).mean()),
        "nll_gap": nll_gap(mixture, x, ref),
        "nll_gap_floor": monte_carlo_floor(gap, mixture.sample64, n).rms,
        "mmd2": mmd2(x[:m], ref[:m]),
        "mmd2_floor": monte_carlo_floor(mmd2, mixture.sample64, m).rms,
        "mmd2_n": m,
    }


def is_point_mass(mixture: GaussianMixture) -> bool:
    """Some component has a zero std: q_0 has no density."""
    return bool((mixture.stds == 0).any())
