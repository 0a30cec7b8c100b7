"""The discrete DDPM chain: posterior, schedules, the map to the VP SDE."""

import math

import pytest
import torch

from sde_gen.models.parametrisation import X0
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    discretized_gaussian_log_likelihood,
    normal_kl,
)


def test_posterior_is_the_numeric_bayes_product():
    """q(x_{t−1}|x_t,x0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x0), by quadrature on a 1-D grid."""
    sched = LinearSchedule()
    x0, xt = torch.tensor([[0.6]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    for step in (2, 10, 500, 1000):
        t = torch.tensor([step])
        mean, var, log_var = sched.posterior_mean_variance(x0, xt, t)
        ab_prev, beta = sched.alpha_bar_prev[step - 1], sched.betas[step - 1]
        grid = torch.linspace(-2, 2, 2_000_001, dtype=torch.float64)
        log_w = -((-0.3 - (1 - beta).sqrt() * grid) ** 2) / (2 * beta) - (
            grid - ab_prev.sqrt() * 0.6
        ) ** 2 / (2 * (1 - ab_prev))
        w = torch.softmax(log_w, 0)
        m = (w * grid).sum()
        v = (w * (grid - m) ** 2).sum()
        assert torch.allclose(mean.squeeze(), m, rtol=1e-7, atol=1e-10), step
        assert torch.allclose(var.squeeze(), v, rtol=1e-5), step
        assert torch.allclose(log_var.squeeze(), v.log(), rtol=1e-5)


def test_beta_tilde_formula():
    """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t, with β̃_1 = 0 (log clipped to β̃_2)."""
    sched = CosineSchedule(T=50)
    t = 7
    ref = (1 - sched.alpha_bar[t - 2]) / (1 - sched.alpha_bar[t - 1]) * sched.betas[t - 1]
    assert torch.isclose(sched.posterior_variance[t - 1], ref, rtol=1e-14)
    assert sched.posterior_variance[0] == 0
    assert sched.posterior_log_variance_clipped[0] == torch.log(sched.posterior_variance[1])


def test_linear_chain_matches_vpsde():
    """log ᾱ_i of the linear chain vs log γ²(i/T) = −∫β of VPSDE(T β_1, T β_T).

    Two discretisation errors, both stated: −log(1−β) − β ≤ β²/(2(1−β)) per step, and the
    Riemann sum Σβ_j − ∫β = (β_T − β_1) i (i − T)/(2T(T − 1)), at most (β_T − β_1)/8 · T/(T−1).
    So |Δ| ≤ Σ_{j≤i} β_j²/(2(1−β_j)) + (β_T − β_1)/8 · T/(T−1), which is O(β_max²/T).
    """
    for T, scale in ((1000, 1.0), (10000, 0.1)):
        sched = LinearSchedule(T, 1e-4 * scale, 0.02 * scale)
        vp = VPSDE(beta_min=T * sched.beta_start, beta_max=T * sched.beta_end)  # the T → ∞ limit
        assert math.isclose(vp.beta_min, 0.1) and math.isclose(vp.beta_max, 20.0)
        t = torch.arange(1, T + 1, dtype=torch.float64) / T
        delta = sched.log_alpha_bar - 2 * torch.log(vp.gamma(t))
        bound = torch.cumsum(sched.betas**2 / (2 * (1 - sched.betas)), 0) + (
            sched.betas[-1] - sched.betas[0]
        ) / 8 * T / (T - 1)
        assert torch.all(delta.abs() <= bound)
        if T == 1000:
            err_1000 = delta.abs().max()
        else:  # first order in 1/T
            assert delta.abs().max() < 0.12 * err_1000


def test_discrete_vpsde_reproduces_the_chain():
    sched = CosineSchedule(T=100)
    sde = DiscreteVPSDE(sched.betas)
    t = sched.continuous_time(torch.arange(1, 101))
    assert torch.allclose(sde.gamma(t) ** 2, sched.alpha_bar, rtol=1e-12)
    assert torch.allclose(sde.sigma(t) ** 2, 1 - sched.alpha_bar, rtol=1e-10)
    # its Gaussian bridge between neighbouring nodes is the DDPM posterior (μ̃ coefficients, β̃)
    s = t[:-1]
    a, b, v = sde.posterior(s, t[1:])
    assert torch.allclose(a, sched.posterior_coef_xt[1:], rtol=1e-10)
    assert torch.allclose(b, sched.posterior_coef_x0[1:], rtol=1e-10)
    assert torch.allclose(v, sched.posterior_variance[1:], rtol=1e-10)


def test_cosine_schedule_formula():
    T, s = 1000, 0.008
    sched = CosineSchedule(T, s)
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for i in (1, 10, 500, 900):
        assert math.isclose(sched.alpha_bar[i - 1].item(), f(i) / f(0), rel_tol=1e-10)
    assert sched.betas.max() <= 0.999
    assert sched.betas[-1] == 0.999  # the last β is clipped


def test_eps_and_x0_round_trip():
    sched = LinearSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(6, 3, dtype=torch.float64, generator=g)
    t = torch.tensor([1, 2, 10, 100, 999, 1000])
    xt = sched.q_sample(x0, t, eps)
    assert torch.allclose(sched.predict_x0_from_eps(xt, t, eps), x0, rtol=1e-8, atol=1e-8)
    # ε from x0 as an x0-predicting model gives it: (x_t − √ᾱ_t x0)/√(1−ᾱ_t)
    sde = DiscreteVPSDE(sched.betas)
    tt = sched.continuous_time(t)
    gamma, sigma = sde.gamma(tt)[:, None], sde.sigma(tt)[:, None]
    assert torch.allclose(X0().eps(x0, xt, gamma, sigma), eps, rtol=1e-8, atol=1e-8)
    mean, var = sched.q_mean_variance(x0, t)
    assert torch.allclose(xt, mean + var.sqrt() * eps)


def test_normal_kl_closed_form_against_quadrature():
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = torch.linspace(-15, 15, 300001, dtype=torch.float64)
    p = torch.distributions.Normal(torch.tensor(m1).double(), math.exp(lv1 / 2))
    q = torch.distributions.Normal(torch.tensor(m2).double(), math.exp(lv2 / 2))
    integrand = p.log_prob(x).exp() * (p.log_prob(x) - q.log_prob(x))
    numeric = torch.trapezoid(integrand, x)
    args = [torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2)]
    assert torch.isclose(normal_kl(*args), numeric, rtol=1e-8)


@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_discretized_decoder_is_a_distribution_over_bins(num_bins):
    """exp(L_0) summed over every bin centre is 1 for any mean and scale."""
    centres = torch.linspace(-1, 1, num_bins, dtype=torch.float64)[:, None]
    for mean, log_scale in ((0.1, -2.0), (-0.7, 0.3), (0.95, -5.0)):
        ll = discretized_gaussian_log_likelihood(
            centres, torch.tensor(mean).double(), torch.tensor(log_scale).double(), num_bins
        )
        assert torch.isclose(ll.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LinearSchedule(T=0), "T=0"),
        (lambda: LinearSchedule(beta_start=0.02, beta_end=1e-4), "beta_start=0.02"),
        (lambda: CosineSchedule(s=-1.0), "s=-1.0"),
        (lambda: DiscreteSchedule(torch.tensor([0.1, 1.2])), "betas"),
        (lambda: DiscreteVPSDE(torch.tensor([0.0, 0.1])), "betas"),
    ],
)
def test_bad_schedule_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_steps():
    sched = LinearSchedule(T=10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="t=11"):
        sched.q_sample(x, torch.tensor([1, 11]), x)
    with pytest.raises(ValueError, match="integer"):
        sched.q_sample(x, torch.tensor([0.5, 0.5]), x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiscreteSchedule(torch.tensor([0.5])),
        lambda: LinearSchedule(T=1),
        lambda: CosineSchedule(T=1),
    ],
    ids=["betas", "linear", "cosine"],
)
def test_single_step_chain_is_a_named_error(make):
    """T = 1 has no β̃_2 for the clipped log-variance: a ValueError naming T, not the IndexError
    that posterior_mean_variance (the VLB, the ancestral sampler) raised at t = 1."""
    with pytest.raises(ValueError, match="T=1"):
        make()
