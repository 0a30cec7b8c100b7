"""PF-ODE log-likelihood and bits/dim against closed forms on exact-score Gaussian mixtures."""

import math

import hydra
import pytest
import torch
from hydra import compose, initialize_config_module

from sde_gen.data import GaussianMixture, random_mixture, ring_mixture
from sde_gen.likelihood import (
    GaussianProbe,
    RademacherProbe,
    bits_per_dim,
    exact_divergence,
    hutchinson_divergence,
    nats_to_bits_per_dim,
    ode_log_likelihood,
)
from sde_gen.sde import VESDE, VPSDE, SubVPSDE

T_MIN = 1e-5


def _times(n: int, t: float) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.float64)


def _exact_prior(mix: GaussianMixture, sde):
    """log q_T, the true marginal at T, in place of the prior π (removes the prior mismatch)."""
    return lambda z: mix.log_prob(z, _times(z.shape[0], sde.T), sde)


@pytest.mark.parametrize("mix", [ring_mixture(std=0.15), random_mixture(4, 16)], ids=["2d", "16d"])
def test_exact_trace_matches_mixture_density(mix):
    """ODE + exact trace = log q_{t_min}(x) within 0.01 nats at rtol = atol = 1e-5."""
    sde = VPSDE()
    x = mix.sample64(8, torch.Generator().manual_seed(0))
    exact = mix.log_prob(x, _times(8, T_MIN), sde)
    logp, nfe = ode_log_likelihood(
        sde, mix.score_fn(sde), x, exact_trace=True, prior_logp=_exact_prior(mix, sde)
    )
    assert (logp - exact).abs().max() < 0.01
    assert 10 < nfe < 1000
    # with the N(0, I) prior the answer moves by log π(x_T) − log q_T(x_T) only (same path)
    logp_prior, _ = ode_log_likelihood(sde, mix.score_fn(sde), x, exact_trace=True)
    mismatch = logp_prior - logp
    assert mismatch.abs().max() < 0.1 * mix.dim
    # t_min bias against the data density at t = 0: O(D σ²_{t_min}/s²) < 1e-3 nats here
    assert (exact - mix.log_prob(x)).abs().max() < 1e-3


@pytest.mark.parametrize("probe", [RademacherProbe(), GaussianProbe()], ids=repr)
def test_hutchinson_is_unbiased(probe):
    """Mean of independent one-probe estimates is within 4 standard errors of the exact value."""
    sde, mix, reps = VPSDE(), ring_mixture(std=0.15), 200
    x = mix.sample64(6, torch.Generator().manual_seed(1))
    score = mix.score_fn(sde)
    exact, _ = ode_log_likelihood(sde, score, x, exact_trace=True)
    est, _ = ode_log_likelihood(
        sde, score, x.repeat(reps, 1), probe=probe, generator=torch.Generator().manual_seed(2)
    )
    est = est.reshape(reps, 6)
    stderr = est.std(0) / math.sqrt(reps)
    assert (stderr > 0).all()
    assert ((est.mean(0) - exact).abs() < 4 * stderr + 2e-4).all()
    # several probes per sample average them: the spread shrinks
    est4, _ = ode_log_likelihood(
        sde,
        score,
        x.repeat(50, 1),
        num_probes=4,
        probe=probe,
        generator=torch.Generator().manual_seed(3),
    )
    assert est4.reshape(50, 6).std(0).mean() < 0.75 * est.std(0).mean()


def _gaussian_closed_form(sde, mu, s, x):
    """What the PF-ODE must return for data N(μ, diag s²): the flow keeps (x − γμ)/√v fixed,
    v_t = γ_t² s² + σ_t², so log p = log π(x_T) + ½ Σ log(v_T / v_{t_min})."""
    n = x.shape[0]
    g0, s0 = sde.gamma(_times(n, T_MIN))[:, None], sde.sigma(_times(n, T_MIN))[:, None]
    g1, s1 = sde.gamma(_times(n, sde.T))[:, None], sde.sigma(_times(n, sde.T))[:, None]
    v0, v1 = g0**2 * s**2 + s0**2, g1**2 * s**2 + s1**2
    x_T = g1 * mu + (v1 / v0).sqrt() * (x - g0 * mu)
    return sde.prior_logp(x_T) + 0.5 * torch.log(v1 / v0).sum(1)


@pytest.mark.parametrize(
    "sde", [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=50.0)], ids=["vp", "subvp", "ve"]
)
def test_single_gaussian_closed_form(sde):
    """Closed form (including the prior mismatch, which is large for VE: N(0, σ_max²) vs
    N(μ, s² + σ_T²)); Rademacher probes are exact since the Jacobian is diagonal."""
    mu = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    s = torch.tensor([0.3, 1.0, 0.1], dtype=torch.float64)
    mix = GaussianMixture([1.0], mu[None], s[None])
    x = mix.sample64(5, torch.Generator().manual_seed(4))
    expected = _gaussian_closed_form(sde, mu, s, x)
    score = mix.score_fn(sde)
    logp, _ = ode_log_likelihood(sde, score, x, exact_trace=True)
    assert (logp - expected).abs().max() < 2e-3
    hutch, _ = ode_log_likelihood(sde, score, x, generator=torch.Generator().manual_seed(0))
    assert (hutch - logp).abs().max() < 1e-3
    # with the exact marginal as prior it is the density at t_min
    exact_prior, _ = ode_log_likelihood(
        sde, score, x, exact_trace=True, prior_logp=_exact_prior(mix, sde)
    )
    assert (exact_prior - mix.log_prob(x, _times(5, T_MIN), sde)).abs().max() < 2e-3


def test_float32_input_agrees_with_float64():
    """The score runs in the input dtype (networks are float32); the ODE state stays float64."""
    sde, mix = VPSDE(), ring_mixture(std=0.15)
    x = mix.sample64(4, torch.Generator().manual_seed(5))
    lp64, _ = ode_log_likelihood(sde, mix.score_fn(sde), x, exact_trace=True)
    lp32, _ = ode_log_likelihood(sde, mix.score_fn(sde), x.float(), exact_trace=True)
    assert lp32.dtype == torch.float64
    assert (lp32 - lp64).abs().max() < 0.02


def test_nfe_counts_score_calls():
    sde, mix = VPSDE(), ring_mixture()
    calls = []

    def score(x, t):
        calls.append(1)
        return mix.score(x, t, sde)

    _, nfe = ode_log_likelihood(sde, score, mix.sample64(3), exact_trace=True)
    assert nfe == len(calls) > 0


def test_divergences_of_a_linear_map():
    """∇·(A x) = tr A; Rademacher Hutchinson is exact for diagonal A, unbiased otherwise."""
    g = torch.Generator().manual_seed(6)
    a = torch.randn(5, 5, dtype=torch.float64, generator=g)
    x = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    div = exact_divergence(x @ a.T, x)
    assert torch.allclose(div, torch.trace(a).expand(3))
    diag = torch.diag(torch.diagonal(a))
    probes = RademacherProbe()((4, 3, 5), g, torch.float64, "cpu")
    assert torch.allclose(hutchinson_divergence(x @ diag.T, x, probes), torch.trace(a).expand(3))


@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_bits_per_dim_of_uniform_density_is_log2_bins(num_bins):
    """Uniform p_y on [−1 − Δ/2, 1 + Δ/2]^D (Δ = 2/(K−1)): exactly log₂ K bits/dim."""
    dim, width = 64, 2.0 / (num_bins - 1)
    logp = torch.full((3,), -dim * math.log(num_bins * width), dtype=torch.float64)
    bpd = nats_to_bits_per_dim(logp, dim, num_bins)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(num_bins)), atol=1e-12)
    assert torch.allclose(nats_to_bits_per_dim(logp, dim), -logp / (dim * math.log(2)))


def test_bits_per_dim_gaussian_closed_form():
    """E_u[bpd] for the model N(0, v I) at t_min on dequantized levels, closed form:
    E(x + Δw)² = x² + Δ²/12, w ~ U(−½, ½); tolerance 4 Monte Carlo standard errors."""
    sde, num_bins, dim, draws, s = VPSDE(), 17, 4, 64, 0.6
    mix = GaussianMixture([1.0], torch.zeros(1, dim), s)
    width = 2.0 / (num_bins - 1)
    levels = torch.randint(0, num_bins, (3, dim), generator=torch.Generator().manual_seed(7))
    x = (width * levels - 1).to(torch.float64)
    v = float(sde.gamma(_times(1, T_MIN))) ** 2 * s**2 + float(sde.sigma(_times(1, T_MIN))) ** 2
    mean_logp = -0.5 * dim * math.log(2 * math.pi * v) - ((x**2).sum(1) + dim * width**2 / 12) / (
        2 * v
    )
    expected = -(mean_logp + dim * math.log(width)) / (dim * math.log(2))
    var_sq = x**2 * width**2 / 3 + width**4 * (1 / 80 - 1 / 144)  # Var (x + Δw)²
    stderr = (var_sq.sum(1)).sqrt() / (2 * v) / (dim * math.log(2)) / math.sqrt(draws)
    bpd, nfe = bits_per_dim(
        sde,
        mix.score_fn(sde),
        x,
        num_bins,
        num_draws=draws,
        generator=torch.Generator().manual_seed(8),
        prior_logp=_exact_prior(mix, sde),
    )
    assert nfe > 10
    assert ((bpd - expected).abs() < 4 * stderr + 1e-3).all()


def test_bad_inputs_name_the_value():
    sde, mix = VPSDE(), ring_mixture()
    x, score = mix.sample64(2), mix.score_fn(sde)
    with pytest.raises(ValueError, match="rtol=0"):
        ode_log_likelihood(sde, score, x, rtol=0)
    with pytest.raises(ValueError, match="num_probes=0"):
        ode_log_likelihood(sde, score, x, num_probes=0)
    with pytest.raises(ValueError, match="probe='normal'"):
        ode_log_likelihood(sde, score, x, probe="normal")
    with pytest.raises(ValueError, match="t_min=0"):
        ode_log_likelihood(sde, score, x, t_min=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        ode_log_likelihood(sde, lambda x, t: torch.zeros(2, 3, dtype=x.dtype), x)
    with pytest.raises(ValueError, match="num_bins=1"):
        bits_per_dim(sde, score, x.clamp(-1, 1), num_bins=1)
    with pytest.raises(ValueError, match="range"):
        bits_per_dim(sde, score, 3 * torch.ones(2, 2, dtype=torch.float64), num_bins=17)


@pytest.mark.parametrize("name,cls", [("rademacher", RademacherProbe), ("gaussian", GaussianProbe)])
def test_probe_config_group(name, cls):
    """`probe=<name>` picks the class; probes have E ε = 0 and E ε² = 1 (4 standard errors)."""
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        probe = hydra.utils.instantiate(compose(overrides=[f"+probe={name}"]).probe)
    assert type(probe) is cls
    eps = probe((20000,), torch.Generator().manual_seed(0), torch.float64, "cpu")
    assert eps.dtype == torch.float64 and eps.shape == (20000,)
    assert abs(eps.mean()) < 4 / math.sqrt(20000)
    assert abs((eps**2).mean() - 1) < 4 * math.sqrt(2 / 20000)
