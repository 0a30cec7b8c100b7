"""Metrics against closed forms: MMD² of Gaussians, the NLL gap of a shifted Gaussian."""

import math

import pytest
import torch
from torch import Tensor

from sde_gen.data import GaussianMixture
from sde_gen.metrics.mixtures import (
    endpoint_error,
    median_bandwidth,
    mixture_flow,
    mmd2_unbiased,
    monte_carlo_floor,
    nll_gap,
)
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas


def mmd2_gaussians(mu1: Tensor, s1: float, mu2: Tensor, s2: float, bandwidth: float) -> float:
    """Population MMD² between N(μ₁, s₁²I) and N(μ₂, s₂²I) for k = exp(−‖x−y‖²/(2h²)).

    E k(X, Y) = (h²/(h²+s₁²+s₂²))^{d/2} exp(−‖μ₁−μ₂‖²/(2(h²+s₁²+s₂²))), X ⟂ Y.
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    d, h2 = mu1.numel(), bandwidth**2
    dist2 = float(((mu1 - mu2) ** 2).sum())

    def ek(a2: float, b2: float, m2: float) -> float:
        v = h2 + a2 + b2
        return (h2 / v) ** (d / 2) * math.exp(-m2 / (2 * v))

    return ek(s1**2, s1**2, 0.0) + ek(s2**2, s2**2, 0.0) - 2 * ek(s1**2, s2**2, dist2)


def _gauss(n: int, mu: list[float], s: float, g: torch.Generator) -> torch.Tensor:
    mu_t = torch.tensor(mu, dtype=torch.float64)
    return mu_t + s * torch.randn(n, len(mu), dtype=torch.float64, generator=g)


def _mmd_over_seeds(mu1, s1, mu2, s2, h, n=300, seeds=24):
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor(
        [mmd2_unbiased(_gauss(n, mu1, s1, g), _gauss(n, mu2, s2, g), h) for _ in range(seeds)]
    )
    return vals.mean().item(), vals.std().item() / math.sqrt(seeds)


def test_mmd2_identical_laws_is_zero_within_standard_error():
    mean, se = _mmd_over_seeds([0.0, 0.0], 1.0, [0.0, 0.0], 1.0, h=1.0)
    assert abs(mean) < 3 * se
    assert se < 2e-3  # the test has power: an MMD² of 0.01 would be detected


@pytest.mark.parametrize(
    "mu2,s2,h", [([0.5, 0.0], 1.0, 1.0), ([0.0, 0.0], 1.5, 0.7), ([1.0, -0.5], 0.6, 2.0)]
)
def test_mmd2_matches_gaussian_closed_form(mu2, s2, h):
    exact = mmd2_gaussians(torch.zeros(2), 1.0, torch.tensor(mu2), s2, h)
    mean, se = _mmd_over_seeds([0.0, 0.0], 1.0, mu2, s2, h)
    assert exact > 10 * se  # clearly positive
    assert abs(mean - exact) < 4 * se


def test_mmd2_closed_form_limits():
    # equal laws → 0; far apart → E k(X,X') + E k(Y,Y') = 2 (h²/(h²+2s²))^{d/2}
    assert mmd2_gaussians(torch.zeros(3), 0.5, torch.zeros(3), 0.5, 1.0) == pytest.approx(0.0)
    far = mmd2_gaussians(torch.zeros(3), 0.5, torch.full((3,), 1e3), 0.5, 1.0)
    assert far == pytest.approx(2 * (1 / 1.5) ** 1.5)


def test_mmd2_sum_of_bandwidths_is_sum_of_terms(gen):
    x, y = _gauss(200, [0.0, 0.0], 1.0, gen), _gauss(150, [0.3, 0.0], 1.0, gen)
    total = mmd2_unbiased(x, y, [0.5, 2.0])
    assert total == pytest.approx(mmd2_unbiased(x, y, 0.5) + mmd2_unbiased(x, y, 2.0))


def test_median_bandwidth_of_gaussian(gen):
    # ‖X − X'‖ for X, X' ~ N(0, I₂) is Rayleigh with scale √2: median √2 √(2 ln 2)
    x = _gauss(1000, [0.0, 0.0], 1.0, gen)
    assert median_bandwidth(x) == pytest.approx(math.sqrt(2) * math.sqrt(2 * math.log(2)), rel=0.05)


def _standard_normal(d: int) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.zeros(1, d, dtype=torch.float64), 1.0)


def test_nll_gap_zero_on_exact_samples(gen):
    p = _standard_normal(3)
    a, b = _gauss(20000, [0.0] * 3, 1.0, gen), _gauss(20000, [0.0] * 3, 1.0, gen)
    # −log p = const + ‖x‖²/2 has variance d/2 per sample; SE of the gap = √(2 · (d/2) / n)
    se = math.sqrt(2 * 1.5 / 20000)
    assert abs(nll_gap(p, a, b)) < 4 * se


@pytest.mark.parametrize("delta,s", [(0.5, 1.0), (0.0, 1.3), (0.3, 0.8)])
def test_nll_gap_shifted_gaussian_closed_form(gen, delta, s):
    """Generated N(δ, s²I) vs p = N(0, I): gap = (d(s² − 1) + ‖δ‖²)/2 (= KL(q‖p) when s = 1)."""
    d, n = 3, 20000
    p = _standard_normal(d)
    mu = [delta] * d
    gen_x, ref = _gauss(n, mu, s, gen), _gauss(n, [0.0] * d, 1.0, gen)
    exact = (d * (s**2 - 1) + d * delta**2) / 2
    nlp = -p.log_prob(gen_x)
    se = math.sqrt(nlp.var().item() / n + 1.5 / n)
    assert abs(nll_gap(p, gen_x, ref) - exact) < 4 * se


def test_endpoint_error_constant_offset(gen):
    x = _gauss(50, [0.0, 0.0, 0.0], 1.0, gen)
    offset = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    assert endpoint_error(x + offset, x) == pytest.approx(1.3)
    assert endpoint_error(x, x) == 0.0


@pytest.mark.parametrize("sde", [VPSDE(), DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))])
def test_mixture_flow_single_gaussian_closed_form(gen, sde):
    """One Gaussian N(μ, s²I): the PF-ODE in y = x/γ is affine,
    y(σ̃) = μ + (y_T − μ) √(s² + σ̃²)/√(s² + σ̃_T²), so x(t_min) is known exactly."""
    mu = torch.tensor([[0.7, -1.2, 0.1]], dtype=torch.float64)
    s = 0.3
    mixture = GaussianMixture(torch.ones(1), mu, s)
    x_T = torch.randn(20, 3, dtype=torch.float64, generator=gen)
    t_min = 1e-3
    ends = torch.tensor([sde.T, t_min], dtype=torch.float64)
    gamma, sigma = sde.gamma(ends), sde.sigma(ends)
    st = sigma / gamma
    y_T = x_T / gamma[0]
    exact = gamma[1] * (mu + (y_T - mu) * torch.sqrt((s**2 + st[1] ** 2) / (s**2 + st[0] ** 2)))
    x0, nfe = mixture_flow(mixture, sde, x_T, t_min)
    assert nfe > 0
    assert torch.allclose(x0, exact, atol=1e-7, rtol=0)


def test_monte_carlo_floor_of_mmd2_is_centred_at_zero():
    floor = monte_carlo_floor(
        lambda a, b: mmd2_unbiased(a, b, 1.0),
        lambda n, g: _gauss(n, [0.0, 0.0], 1.0, g),
        n=300,
        seeds=range(12),
    )
    assert len(floor.values) == 12
    assert abs(floor.mean) < 3 * floor.std / math.sqrt(12)
    assert floor.rms == pytest.approx(math.sqrt(floor.mean**2 + floor.std**2 * 11 / 12))


def test_bad_inputs_name_the_value(gen):
    x = _gauss(10, [0.0, 0.0], 1.0, gen)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd2_unbiased(x, x, -1.0)
    with pytest.raises(ValueError, match="dimension"):
        mmd2_unbiased(x, _gauss(10, [0.0, 0.0, 0.0], 1.0, gen), 1.0)
    with pytest.raises(ValueError, match="x_ref shape"):
        endpoint_error(x, x[:5])
    with pytest.raises(ValueError, match="NaN"):
        mmd2_unbiased(x, torch.full((4, 2), float("nan")), 1.0)
    with pytest.raises(ValueError, match="seeds"):
        monte_carlo_floor(lambda a, b: 0.0, lambda n, g: x[:n], n=5, seeds=[0])
