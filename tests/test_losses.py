"""Losses: weightings equal their formulas, importance and uniform time sampling estimate the same
DSM loss, the DDPM VLB terms match numeric integration, L_hybrid's scale and stop-gradient."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from scipy import integrate
from torch import nn

from sde_gen.cli.build import match_bins
from sde_gen.data import ring_mixture
from sde_gen.losses import (
    DSMLoss,
    HybridLoss,
    ImportanceTimeSampler,
    LikelihoodWeighting,
    LossAwareStepSampler,
    OnesWeighting,
    SigmaSquaredWeighting,
    SimpleLoss,
    UniformTimeSampler,
    VLBLoss,
    vlb_term,
    vlb_terms,
)
from sde_gen.models import MLP, ScoreModel
from sde_gen.models.learned_variance import Direct, LinearRange, SigmoidRange
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from sde_gen.sde.ddpm import LinearSchedule

CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf"
TIMES = torch.tensor([1e-4, 0.01, 0.3, 0.77, 1.0], dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- weightings
def test_weightings_equal_their_formulas():
    vp = VPSDE(0.1, 20.0)
    beta = 0.1 + 19.9 * TIMES
    int_beta = 0.1 * TIMES + 0.5 * 19.9 * TIMES**2
    torch.testing.assert_close(LikelihoodWeighting()(vp, TIMES), beta, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        SigmaSquaredWeighting()(vp, TIMES), -torch.expm1(-int_beta), rtol=1e-12, atol=0
    )
    assert torch.equal(OnesWeighting()(vp, TIMES), torch.ones_like(TIMES))
    ve = VESDE(0.01, 50.0)
    k = 2 * math.log(5000.0)
    torch.testing.assert_close(
        LikelihoodWeighting()(ve, TIMES), 1e-4 * k * torch.exp(k * TIMES), rtol=1e-12, atol=0
    )


def test_over_sigma2_equals_lambda_over_sigma_squared():
    """λ/σ² on the VP SDE, σ_t² = 1 − e^{−∫β}: 1 (σ²), β/σ² (likelihood), 1/σ² (ones); float64."""
    vp = VPSDE(0.1, 20.0)
    t32 = TIMES.float()
    sigma2 = -torch.expm1(-(0.1 * TIMES + 0.5 * 19.9 * TIMES**2))
    beta = 0.1 + 19.9 * TIMES
    for w, expected in (
        (SigmaSquaredWeighting(), torch.ones_like(TIMES)),
        (LikelihoodWeighting(), beta / sigma2),
        (OnesWeighting(), 1 / sigma2),
    ):
        torch.testing.assert_close(w.over_sigma2(vp, TIMES), expected, rtol=1e-12, atol=0)
        assert w.over_sigma2(vp, t32).dtype == torch.float64


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=repr)
def test_likelihood_antiderivative_is_g2_over_sigma2(sde):
    """F(t) = −log SNR(t) has F' = g²/σ² for every linear SDE (central differences)."""
    w, t, h = LikelihoodWeighting(), torch.tensor([0.05, 0.3, 0.8], dtype=torch.float64), 1e-6
    dF = (w.antiderivative(sde, t + h) - w.antiderivative(sde, t - h)) / (2 * h)
    torch.testing.assert_close(dF, w.over_sigma2(sde, t), rtol=1e-6, atol=0)
    u = w.antiderivative(sde, t)
    torch.testing.assert_close(w.inverse_antiderivative(sde, u), t, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- time samplers
def _reference_cdf(sde, weighting, t_min):
    def h(s: float) -> float:
        t = torch.tensor([s], dtype=torch.float64)
        return float(weighting.over_sigma2(sde, t)[0])

    pts = [t_min, 1e-2, 0.1, 1.0]
    Z = sum(integrate.quad(h, a, b, epsabs=0, epsrel=1e-10)[0] for a, b in zip(pts, pts[1:]))

    def cdf(x):
        x = np.atleast_1d(x)
        out = []
        for v in x:
            cut = [p for p in pts if p < v] + [v]
            out.append(sum(integrate.quad(h, a, b, epsrel=1e-10)[0] for a, b in zip(cut, cut[1:])))
        return np.array(out) / Z

    return cdf, Z


@pytest.mark.parametrize(
    "weighting,t_min", [(LikelihoodWeighting(), 1e-4), (OnesWeighting(), 1e-3)], ids=repr
)
def test_importance_sampler_follows_r(weighting, t_min):
    """KS test of 4000 draws against the CDF of r ∝ λ/σ² (scipy quad); the 1% critical value of
    the KS statistic is 1.63/√n = 0.026. The exact path (likelihood) and the grid path (ones)."""
    sde = VPSDE()
    t, coef = ImportanceTimeSampler()(sde, weighting, 4000, t_min, gen(1))
    assert t.min() >= t_min and t.max() <= 1.0
    cdf, Z = _reference_cdf(sde, weighting, t_min)
    grid = np.quantile(t.numpy(), np.linspace(0.005, 0.995, 60))
    ks = np.max(np.abs(cdf(grid) - np.searchsorted(np.sort(t.numpy()), grid, "right") / len(t)))
    assert ks < 1.63 / math.sqrt(len(t))
    # coef = λ/σ² · u/r = Z/(T − t_min) (exact path) or close to it (grid path)
    torch.testing.assert_close(coef, torch.full_like(coef, Z / (1 - t_min)), rtol=1e-3, atol=0)


def test_sigma2_importance_is_uniform_sampling():
    """r ∝ λ/σ² = 1: the importance sampler draws exactly the uniform sampler's times."""
    sde, w = VPSDE(), SigmaSquaredWeighting()
    t_u, c_u = UniformTimeSampler()(sde, w, 100, 1e-5, gen(3))
    t_i, c_i = ImportanceTimeSampler()(sde, w, 100, 1e-5, gen(3))
    torch.testing.assert_close(t_u, t_i, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(c_i, torch.ones_like(c_i), rtol=1e-12, atol=0)
    torch.testing.assert_close(c_u, torch.ones_like(c_u), rtol=1e-12, atol=0)


# ---------------------------------------------------------------- DSM: same loss value
class ZeroEps(nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


class MixtureEps(nn.Module):
    """ε_θ = −σ_t ∇log q_t (the exact ε-predictor of a Gaussian mixture) + 0.5 sin(x)."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.mixture, self.sde = mixture, sde

    def forward(self, x, t):
        x64, t64 = x.double(), t.double()
        eps = -self.sde.sigma(t64)[:, None] * self.mixture.score(x64, t64, self.sde)
        return (eps + 0.5 * torch.sin(x64)).to(x.dtype)


def test_dsm_with_zero_network_equals_closed_form():
    """ε_θ ≡ 0: L = D·E_{U}[g²/σ²] = D (log SNR(t_min) − log SNR(T))/(T − t_min), both samplers.
    Standard errors: uniform ~0.4, importance ~0.02 (n = 20000); asserted within 4 s.e."""
    sde, t_min, n, D = VPSDE(), 1e-2, 20000, 2
    exact = (
        D
        * float(sde.log_snr(torch.tensor([t_min]).double()) - sde.log_snr(torch.ones(1).double()))
        / (1 - t_min)
    )
    model = ScoreModel(ZeroEps(), sde)
    x0 = torch.randn(n, D, generator=gen(0), dtype=torch.float64)
    for sampler in (UniformTimeSampler(), ImportanceTimeSampler()):
        _, per = DSMLoss(LikelihoodWeighting(), sampler, t_min).per_sample(model, x0, gen(1))
        se = float(per.std()) / math.sqrt(n)
        assert abs(float(per.mean()) - exact) < 4 * se, (sampler, float(per.mean()), exact, se)


@pytest.mark.parametrize(
    "weighting,t_min", [(LikelihoodWeighting(), 1e-2), (OnesWeighting(), 1e-2)], ids=repr
)
def test_uniform_and_importance_estimate_same_loss(weighting, t_min):
    """Ring mixture, ε_θ = exact ε + 0.5 sin(x) (non-zero loss). Means of 20000 per-sample
    losses under U[t_min, 1] and under r ∝ λ/σ² agree within 4 combined standard errors; the
    importance estimator has the smaller variance."""
    sde, n = VPSDE(), 20000
    mixture = ring_mixture(std=0.15)
    model = ScoreModel(MixtureEps(mixture, sde), sde)
    x0 = mixture.sample64(n, gen(0))
    out = {}
    for name, sampler in (("u", UniformTimeSampler()), ("is", ImportanceTimeSampler())):
        _, per = DSMLoss(weighting, sampler, t_min).per_sample(model, x0, gen(1))
        out[name] = (float(per.mean()), float(per.var()) / n)
    diff = abs(out["u"][0] - out["is"][0])
    assert diff < 4 * math.sqrt(out["u"][1] + out["is"][1]), out
    assert out["is"][1] < out["u"][1]
    assert out["is"][0] > 0.5  # the perturbation makes the loss clearly non-zero


def test_dsm_value_for_sigma2_is_mean_squared_error():
    """λ = σ²: the loss is E‖ε − ε_θ‖² summed over dimensions: ε_θ ≡ 0 gives D."""
    model = ScoreModel(ZeroEps(), VPSDE())
    x0 = torch.randn(40000, 3, generator=gen(0), dtype=torch.float64)
    value = float(DSMLoss()(model, x0, gen(2)))
    assert abs(value - 3.0) < 4 * math.sqrt(2 * 3 / 40000)  # Var‖ε‖² = 2D


# ---------------------------------------------------------------- validation
def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="t_min=0"):
        DSMLoss(t_min=0.0)
    with pytest.raises(ValueError, match="t_min=2.0"):
        DSMLoss(t_min=2.0)(ScoreModel(ZeroEps(), VPSDE()), torch.zeros(2, 2))
    # names are not accepted: configs pick classes with loss/weighting=, loss/time_sampler=
    with pytest.raises(ValueError, match="'perceptual'"):
        DSMLoss(weighting="perceptual")
    with pytest.raises(ValueError, match="'stratified'"):
        DSMLoss(time_sampler="stratified")
    with pytest.raises(ValueError, match="weighting=.*lambda"):
        DSMLoss(weighting=lambda sde, t: t)  # a bare callable has no over_sigma2
    assert isinstance(
        DSMLoss(LikelihoodWeighting(), ImportanceTimeSampler()).time_sampler, ImportanceTimeSampler
    )
    default = DSMLoss()
    assert isinstance(default.weighting, SigmaSquaredWeighting)
    assert isinstance(default.time_sampler, UniformTimeSampler)
    with pytest.raises(ValueError, match="vlb_weight=-0.1"):
        HybridLoss(vlb_weight=-0.1)
    with pytest.raises(ValueError, match="num_bins=1"):
        SimpleLoss(num_bins=1)
    with pytest.raises(ValueError, match="uniform_prob=0"):
        LossAwareStepSampler(uniform_prob=0)
    small = LinearSchedule(T=10, beta_end=0.2)
    with pytest.raises(ValueError, match="DiscreteVPSDE"):
        SimpleLoss(small)(ScoreModel(ZeroEps(), VPSDE()), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="does not match"):
        other = DiscreteVPSDE(LinearSchedule(T=10, beta_end=0.1).betas)
        SimpleLoss(small)(ScoreModel(ZeroEps(), other), torch.zeros(2, 2))


# ---------------------------------------------------------------- DDPM VLB
SCHED = LinearSchedule(T=20, beta_start=1e-3, beta_end=0.2)


class OracleEps(nn.Module):
    """The true ε of a single data point x*: ε = (x_t − √ᾱ_i x*)/√(1 − ᾱ_i), i = t·T."""

    def __init__(self, x_star, schedule):
        super().__init__()
        self.x_star, self.schedule = x_star, schedule

    def forward(self, x, t):
        i = torch.round(t.double() * self.schedule.T).long()
        alpha_bar = self.schedule.alpha_bar[i - 1][:, None]
        return (x - alpha_bar.sqrt() * self.x_star) / (1 - alpha_bar).sqrt()


def test_vlb_kl_terms_vanish_for_the_true_posterior():
    """μ_θ = μ̃_t and Σ = β̃_t: every KL term L_{t−1}, t ≥ 2, is zero (float64 round-off)."""
    x_star = torch.tensor([[0.3, -0.7, 1.0]], dtype=torch.float64)
    model = ScoreModel(OracleEps(x_star, SCHED), DiscreteVPSDE(SCHED.betas))
    terms, prior = vlb_terms(model, SCHED, x_star.expand(4, 3), num_bins=256, generator=gen(0))
    assert terms.shape == (4, 20)
    assert terms[:, 1:].abs().max() < 1e-10
    assert (terms[:, 0] > 0).all() and (prior > 0).all()


def _normal_pdf(y, m, v):
    return math.exp(-((y - m) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)


@pytest.mark.parametrize("learned", [False, True])
def test_vlb_terms_match_numeric_integration(learned):
    """1-D: L_{t−1} = ∫ q log q/p (quad) for t ≥ 2 and L_0 = −log ∫_bin p (quad) for t = 1, with
    μ_θ, Σ_θ recomputed from the paper's formulas (Ho et al. eq. 11, Nichol & Dhariwal eq. 15)."""
    torch.manual_seed(0)
    net = MLP((1,), hidden=16, num_layers=1, learn_variance=learned).double()
    nn.init.normal_(net.out.weight, std=0.5)
    model = ScoreModel(net, DiscreteVPSDE(SCHED.betas))
    beta = SCHED.betas.numpy()
    abar = np.cumprod(1 - beta)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    tilde = beta * (1 - abar_prev) / (1 - abar)
    num_bins = 17
    for step, x0v, xtv in [(7, 0.25, 0.6), (20, -0.5, 0.1), (1, 0.125, 0.2), (1, -1.0, -0.9)]:
        i = step - 1
        x0 = torch.tensor([[x0v]], dtype=torch.float64)
        xt = torch.tensor([[xtv]], dtype=torch.float64)
        steps = torch.tensor([step])
        got = float(vlb_term(model, SCHED, x0, xt, steps, num_bins=num_bins).detach())
        eps, v = model.eps_and_extra(xt, torch.tensor([step / SCHED.T], dtype=torch.float64))
        eps = float(eps.detach())
        mu = (xtv - beta[i] / math.sqrt(1 - abar[i]) * eps) / math.sqrt(1 - beta[i])
        log_small = math.log(tilde[max(i, 1)])
        if learned:
            frac = 1 / (1 + math.exp(-float(v.detach())))
            var = math.exp(frac * math.log(beta[i]) + (1 - frac) * log_small)
        else:
            var = math.exp(log_small)
        if step > 1:
            m_q = (
                math.sqrt(abar_prev[i]) * beta[i] / (1 - abar[i]) * x0v
                + math.sqrt(1 - beta[i]) * (1 - abar_prev[i]) / (1 - abar[i]) * xtv
            )
            v_q = tilde[i]
            s = math.sqrt(v_q)

            def f(y, m_q=m_q, v_q=v_q, mu=mu, var=var):
                q = _normal_pdf(y, m_q, v_q)
                return q * (math.log(q) - math.log(_normal_pdf(y, mu, var)))

            ref = integrate.quad(f, m_q - 12 * s, m_q + 12 * s, epsabs=1e-13, epsrel=1e-11)[0]
        else:
            h = 1.0 / (num_bins - 1)
            lo = -np.inf if x0v <= -1 else x0v - h
            ref = -math.log(integrate.quad(_normal_pdf, lo, x0v + h, args=(mu, var))[0])
        assert got == pytest.approx(ref, rel=1e-6, abs=1e-9), (step, got, ref)


# ---------------------------------------------------------------- L_hybrid
class ConstEps(nn.Module):
    """ε_θ ≡ a and v ≡ b (learned variance) with parameters a, b of shape (C,)."""

    def __init__(self, C):
        super().__init__()
        self.a = nn.Parameter(torch.full((C,), 0.3, dtype=torch.float64))
        self.b = nn.Parameter(torch.full((C,), -0.2, dtype=torch.float64))

    def forward(self, x, t):
        return torch.cat([self.a + 0 * x, self.b + 0 * x], dim=1)


class ConstOutput(nn.Module):
    """ε_θ ≡ ``a`` and the variance output ≡ ``b`` everywhere (a hand-built learned variance)."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, t):
        return torch.cat([torch.full_like(x, self.a), torch.full_like(x, self.b)], dim=1)


def _expected_log_variance(name: str, b: float, log_beta: np.ndarray, log_tilde: np.ndarray):
    """log Σ_t written out: eq. 15 with f = sigmoid(b) or (b + 1)/2, or log b (Σ = b)."""
    if name == "direct":
        return np.full_like(log_beta, math.log(b))
    f = 1 / (1 + math.exp(-b)) if name == "sigmoid_range" else (b + 1) / 2
    return f * log_beta + (1 - f) * log_tilde


CONVENTIONS = {"sigmoid_range": SigmoidRange, "linear_range": LinearRange, "direct": Direct}


@pytest.mark.parametrize(
    ("name", "b"),
    [
        ("sigmoid_range", 0.7),
        ("linear_range", 0.3),
        ("linear_range", 1.0),
        ("linear_range", -1.0),
        ("linear_range", 1.4),
        ("direct", 0.004),
    ],
)
def test_hybrid_vlb_term_of_each_variance_convention_is_the_gaussian_kl(name, b):
    """L_hybrid's VLB term L_{t−1} for t ≥ 2, with ε_θ ≡ 0.3 and the variance output ≡ b read by
    model/variance=``name``, equals the closed form Σ_d ½ (log Σ − log β̃ + (β̃ + (μ̃ − μ_θ)²)/Σ − 1)
    with Σ from the convention's formula, μ̃ and μ_θ from Ho et al. eqs. 7 and 11, to 1e-10."""
    model = ScoreModel(
        ConstOutput(0.3, b), DiscreteVPSDE(SCHED.betas), variance=CONVENTIONS[name]()
    )
    assert type(model.variance).__name__ == CONVENTIONS[name].__name__
    x0 = torch.rand(6, 3, generator=gen(1), dtype=torch.float64) * 2 - 1
    steps = torch.tensor([2, 3, 7, 12, 19, 20])
    noise = torch.randn(6, 3, generator=gen(2), dtype=torch.float64)
    draws = {"steps": steps, "weights": torch.ones(6, dtype=torch.float64), "noise": noise}
    with torch.no_grad():
        got = HybridLoss(SCHED, num_bins=256)._terms(model, x0, draws)["vb"].numpy()
    beta = SCHED.betas.numpy()
    abar = np.cumprod(1 - beta)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    i = steps.numpy() - 1
    tilde = beta[i] * (1 - abar_prev[i]) / (1 - abar[i])
    log_var = _expected_log_variance(name, b, np.log(beta[i]), np.log(tilde))[:, None]
    x0n, epsn = x0.numpy(), noise.numpy()
    xt = np.sqrt(abar[i])[:, None] * x0n + np.sqrt(1 - abar[i])[:, None] * epsn
    mu = (xt - (beta[i] / np.sqrt(1 - abar[i]))[:, None] * 0.3) / np.sqrt(1 - beta[i])[:, None]
    coef_x0 = np.sqrt(abar_prev[i]) * beta[i] / (1 - abar[i])
    coef_xt = np.sqrt(1 - beta[i]) * (1 - abar_prev[i]) / (1 - abar[i])
    m_q = coef_x0[:, None] * x0n + coef_xt[:, None] * xt
    var = np.exp(log_var)
    kl = 0.5 * (log_var - np.log(tilde)[:, None] + (tilde[:, None] + (m_q - mu) ** 2) / var - 1)
    np.testing.assert_allclose(got, kl.sum(1), rtol=1e-10, atol=0)


class ConstEps0(nn.Module):
    """ε_θ ≡ ``a``, no variance output."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x, t):
        return torch.full_like(x, self.a)


class TildeNet(nn.Module):
    """ε_θ ≡ 0.3 and variance output Σ_t = β̃_t (β̃_2 at t = 1, the clipped value) at t = i/T."""

    def forward(self, x, t):
        i = torch.round(t.to(torch.float64) * SCHED.T).long()
        tilde = SCHED.posterior_log_variance_clipped.exp()[i - 1].to(x.dtype)
        return torch.cat([torch.full_like(x, 0.3), tilde[:, None].expand_as(x)], dim=1)


def test_direct_variance_of_beta_tilde_is_the_fixed_small_bound():
    """model/variance=direct whose output is Σ_t = β̃_t gives every VLB term L_0..L_{T−1} of
    the fixed-β̃ model (the same ε_θ, no variance output) to 1e-12; a Σ ≤ 0 is a ValueError
    naming the value, not a NaN loss."""
    sde = DiscreteVPSDE(SCHED.betas)
    learned = ScoreModel(TildeNet(), sde, variance=Direct())
    fixed = ScoreModel(ConstEps0(0.3), sde)
    x0 = torch.rand(4, 3, generator=gen(3), dtype=torch.float64) * 2 - 1
    ours, prior = vlb_terms(learned, SCHED, x0, generator=gen(4))
    ref, prior_ref = vlb_terms(fixed, SCHED, x0, generator=gen(4))
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0) and torch.equal(prior, prior_ref)
    assert (ref > 0).all()
    negative = ScoreModel(ConstOutput(0.3, -0.01), sde, variance=Direct())
    with pytest.raises(ValueError, match=r"Direct: the network's variance output Σ = -0\.01"):
        HybridLoss(SCHED, num_bins=256)(negative, x0, gen(5))


def test_hybrid_vlb_part_is_in_bits_by_default_as_the_reference():
    """improved-diffusion's vb term is in bits/dim: L_hybrid(bits) − L_simple is exactly
    1/ln 2 times L_hybrid(nats) − L_simple for the same draws."""
    model = ScoreModel(ConstEps(3), DiscreteVPSDE(SCHED.betas))
    x0 = torch.rand(64, 3, generator=gen(0), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        simple = float(SimpleLoss(SCHED)(model, x0, gen(5)))
        bits = float(HybridLoss(SCHED, num_bins=256)(model, x0, gen(5))) - simple
        nats = float(HybridLoss(SCHED, num_bins=256, vlb_units="nats")(model, x0, gen(5))) - simple
    assert bits == pytest.approx(nats / math.log(2), rel=1e-9)
    assert HybridLoss(SCHED).vlb_units.value == "bits" and HybridLoss(SCHED).vlb_weight == 0.001
    with pytest.raises(ValueError, match="vlb_units='bytes'"):
        HybridLoss(SCHED, vlb_units="bytes")


def test_hybrid_scale_is_pinned_to_the_full_bound():
    """L_hybrid = mean_b[L_simple + 0.001 (T L_{t−1} + L_T)/D]: 0.001 multiplies the full
    L_vlb ≈ T·E_t[L_{t−1}] (here in nats/dim), not a single sampled term; vb equals vlb_term."""
    model = ScoreModel(ConstEps(3), DiscreteVPSDE(SCHED.betas))
    x0 = torch.rand(64, 3, generator=gen(0), dtype=torch.float64) * 2 - 1
    loss = HybridLoss(SCHED, num_bins=256, vlb_units="nats")
    with torch.no_grad():  # values only
        terms = loss.terms(model, x0, gen(5))
        value = float(loss(model, x0, gen(5)))
        expected = terms["simple"] + 0.001 * (20 * terms["vb"] + terms["prior"]) / 3
        assert value == pytest.approx(float(expected.mean()), rel=1e-12)
        direct = vlb_term(model, SCHED, x0, terms["xt"], terms["steps"], num_bins=256)
        torch.testing.assert_close(terms["vb"], direct.detach(), rtol=1e-12, atol=1e-12)
        simple = float(SimpleLoss(SCHED)(model, x0, gen(5)))
        assert value - simple == pytest.approx(
            float((0.001 * (20 * terms["vb"] + terms["prior"]) / 3).mean()), rel=1e-9
        )


def test_hybrid_mean_gradient_comes_only_from_simple():
    """∂L_hybrid/∂a = ∂L_simple/∂a (the mean is detached in the VB term); ∂L_hybrid/∂b =
    0.001 ∂L_vlb/∂b; L_vlb alone does move a."""
    x0 = torch.rand(32, 3, generator=gen(0), dtype=torch.float64) * 2 - 1
    grads = {}
    for name, loss in (
        ("hybrid", HybridLoss(SCHED, vlb_units="nats")),
        ("simple", SimpleLoss(SCHED)),
        ("vlb", VLBLoss(SCHED)),
    ):
        net = ConstEps(3)
        loss(ScoreModel(net, DiscreteVPSDE(SCHED.betas)), x0, gen(9)).backward()
        grads[name] = (net.a.grad.clone(), net.b.grad.clone() if net.b.grad is not None else None)
    torch.testing.assert_close(grads["hybrid"][0], grads["simple"][0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grads["hybrid"][1], 0.001 * grads["vlb"][1], rtol=1e-9, atol=1e-15)
    assert grads["simple"][1] is None or grads["simple"][1].abs().max() == 0
    assert grads["vlb"][0].abs().max() > 1e-3


# ---------------------------------------------------------------- loss-aware resampling
def test_loss_aware_sampler_weights_are_unbiased():
    """After warm-up p_t ∝ √E[ℓ_t²] (mixed with 0.001 uniform); E_p[w ℓ] = (1/T) Σ ℓ_t within
    4 standard errors (n = 20000), and the history survives state_dict round trips."""
    T = 20
    s = LossAwareStepSampler(history=3)
    ell = torch.arange(1, T + 1, dtype=torch.float64) ** 2
    steps, w = s(5, T, gen(0))
    assert torch.equal(w, torch.ones(5, dtype=torch.float64))  # uniform before warm-up
    for _ in range(3):
        s.update(torch.arange(1, T + 1), ell, T)
    p = s.probs(T)
    torch.testing.assert_close(p, 0.999 * ell / ell.sum() + 0.001 / T, rtol=1e-12, atol=0)
    steps, w = s(20000, T, gen(1))
    est = w * ell[steps - 1]
    assert abs(float(est.mean()) - float(ell.mean())) < 4 * float(est.std()) / math.sqrt(20000)
    s2 = LossAwareStepSampler(history=3)
    s2.load_state_dict(s.state_dict())
    torch.testing.assert_close(s2.probs(T), p)
    s.update(torch.tensor([1]), torch.tensor([1e6]), T)  # oldest entry dropped, newest kept
    assert s.losses[0].tolist() == [1.0, 1.0, 1e6]


# ---------------------------------------------------------------- every loss config
DSM_CONFIGS = ["dsm", "dsm_likelihood", "dsm_likelihood_is", "dsm_ones_is"]
SDE_CONFIGS = ["vp", "subvp", "ve", "linear"]
DDPM_CONFIGS = {
    "ddpm_simple": "ddpm_linear",
    "ddpm_vlb": "ddpm_linear",
    "ddpm_hybrid": "ddpm_linear",
    "ddpm_hybrid_cosine": "ddpm_cosine",
    "ddpm_vlb_resample": "ddpm_linear",
}


def _load(group, name):
    """conf/<group>/<name>.yaml composed by Hydra (its defaults list applied), instantiated."""
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose(overrides=[f"+{group}={name}"])
    return hydra.utils.instantiate(cfg[group])


def test_every_loss_config_is_tested():
    names = {p.stem for p in (CONF / "loss").glob("*.yaml")}
    assert names == set(DSM_CONFIGS) | set(DDPM_CONFIGS) | {"vdm"}  # vdm: tests/test_vdm*.py


@pytest.mark.parametrize("sde_name", SDE_CONFIGS)
@pytest.mark.parametrize("loss_name", DSM_CONFIGS)
def test_dsm_configs_run(loss_name, sde_name):
    sde = _load("sde", sde_name)
    model = ScoreModel(MLP((2,), hidden=32, num_layers=1), sde)
    value = _load("loss", loss_name)(model, torch.randn(16, 2, generator=gen(0)), gen(1))
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert model.eps_net.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("loss_name", list(DDPM_CONFIGS))
def test_ddpm_configs_run(loss_name):
    loss = _load("loss", loss_name)
    assert loss.num_bins is None  # the configs take the levels from the data
    match_bins(loss, SimpleNamespace(num_bins=256))
    model = ScoreModel(
        MLP((1, 4, 4), hidden=32, num_layers=1, learn_variance=True),
        _load("sde", DDPM_CONFIGS[loss_name]),
    )
    x0 = torch.rand(8, 1, 4, 4, generator=gen(0)) * 2 - 1
    for _ in range(2):
        value = loss(model, x0, gen(1))
        value.backward()
        assert torch.isfinite(value) and value > 0
    assert isinstance(loss.state_dict(), dict)


@pytest.mark.parametrize("loss_cls", [SimpleLoss, VLBLoss, HybridLoss])
def test_discrete_losses_reject_empty_or_integer_batches_and_cast_floats(loss_cls):
    model = ScoreModel(ConstEps(3), DiscreteVPSDE(SCHED.betas))
    loss = loss_cls(SCHED, num_bins=256)
    with pytest.raises(ValueError, match="batch size 0"):
        loss(model, torch.zeros(0, 3, dtype=torch.float64), gen(0))
    with pytest.raises(ValueError, match="torch.int64"):
        loss(model, torch.zeros(4, 3, dtype=torch.int64), gen(0))
    x0 = torch.rand(8, 3, generator=gen(1), dtype=torch.float64) * 2 - 1
    as32 = loss_cls(SCHED, num_bins=256)(model.float(), x0, gen(2))
    assert as32.dtype == torch.float32 and torch.isfinite(as32)


# ---------------------------------------------------------------- the shared protocol
@pytest.mark.parametrize("kind", ["dsm", "simple", "vdm"])
def test_every_loss_is_the_mean_of_its_evaluated_slices_through_the_base(kind):
    """``losses.base.Loss`` holds the protocol once: loss(model, x0, g) = mean of evaluate(draw)
    with the same generator, exactly; per_sample gives the same draws and values; slices of the
    draws evaluated apart concatenate to the whole (the trainer's DDP/accumulation path)."""
    from sde_gen.losses import Loss, VDMLoss
    from sde_gen.losses.base import take
    from sde_gen.models import SinusoidalEmbedding
    from sde_gen.sde import VDMSDE, DiscreteVPSDE, LearnedNegLogSNR

    sde, loss = {
        "dsm": (VPSDE(), DSMLoss(LikelihoodWeighting())),
        "simple": (DiscreteVPSDE(torch.linspace(1e-4, 0.02, 100)), SimpleLoss()),
        "vdm": (VDMSDE(LearnedNegLogSNR(hidden=8, seed=1)), VDMLoss()),
    }[kind]
    assert isinstance(loss, Loss) and loss.needs_feedback is False
    torch.manual_seed(0)
    net = MLP((2,), hidden=16, num_layers=1, embedding=SinusoidalEmbedding(8))
    model = ScoreModel(net, sde).double()
    x0 = ring_mixture().sample64(12, gen(3))
    whole = loss(model, x0, gen(4))
    draws, per = loss.per_sample(model, x0, gen(4))
    assert torch.equal(per.mean(), whole)
    parts = [loss.evaluate(model, x0[s], take(draws, s)).loss for s in (slice(0, 5), slice(5, 12))]
    torch.testing.assert_close(torch.cat(parts), per, rtol=1e-12, atol=0)
    # DSM and VDM learn nothing (the base's empty state); the DDPM loss keeps its step sampler's
    assert loss.state_dict() == ({"step_sampler": {}} if kind == "simple" else {})
