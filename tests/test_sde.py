"""Forward SDEs: marginals against simulation, closed forms, numerics near t = 0, bad input."""

import math

import pytest
import torch
import torchsde
from torch import Tensor

from sde_gen.sde import (
    SDE,
    VESDE,
    VPSDE,
    LinearBeta,
    LinearSDE,
    Polynomial,
    SubVPSDE,
    drift,
    eps_from_score,
    expand_as,
    score_from_eps,
    x0_from_score,
)
from sde_gen.sde.coordinates import TimeCoordinates
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers.base import StepContext
from sde_gen.solvers.euler_maruyama import euler_maruyama_step


class TorchsdeForward(torch.nn.Module):
    """The forward SDE with the ``f(t, y)``, ``g(t, y)`` interface of ``torchsde.sdeint`` (Itô,
    diagonal noise) on (batch, channels) tensors."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde = sde

    def _t(self, t: Tensor, y: Tensor) -> Tensor:
        return t.to(y.dtype).reshape(1).expand(y.shape[0])

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return expand_as(self.sde.f(self._t(t, y)), y) * y

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return expand_as(self.sde.g(self._t(t, y)), y).expand_as(y)


def custom_linear_sde() -> LinearSDE:
    # f(t) = −1 − sin(3t), g(t) = 0.5 + t: no closed form used anywhere in the code.
    return LinearSDE(lambda t: -1.0 - torch.sin(3 * t), lambda t: 0.5 + t)


SDES = {
    "vp": VPSDE(0.1, 20.0),
    "subvp": SubVPSDE(0.1, 20.0),
    "ve": VESDE(0.01, 5.0),
    "linear": custom_linear_sde(),
}


@pytest.mark.parametrize("name", list(SDES))
def test_forward_simulation_matches_marginal(name):
    """torchsde paths from a fixed x0: mean γ_t x0 and variance σ_t² within 4 standard errors.

    Additive noise makes the SRK scheme strong order 1.5, so at dt = 2e-3 the discretisation bias is
    far below the Monte Carlo error of n = 8000 paths (4 s.e.: 4.5% of σ_t for the mean, 6.3% of
    σ_t² for the variance).
    """
    sde = SDES[name]
    n, x0 = 8000, torch.tensor([1.5, -0.5], dtype=torch.float64)
    y0 = x0.expand(n, 2).clone()
    ts = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    bm = torchsde.BrownianInterval(
        0.0, 1.0, size=(n, 2), dtype=torch.float64, entropy=1, levy_area_approximation="space-time"
    )
    with torch.no_grad():
        ys = torchsde.sdeint(TorchsdeForward(sde), y0, ts, method="srk", dt=2e-3, bm=bm)
    for k, t in enumerate(ts[1:], start=1):
        tt = t.reshape(1)
        mean, var = sde.gamma(tt) * x0, sde.sigma(tt) ** 2
        emp_mean, emp_var = ys[k].mean(0), ys[k].var(0)
        assert torch.all((emp_mean - mean).abs() < 4 * torch.sqrt(var / n)), (t, emp_mean, mean)
        assert torch.all((emp_var - var).abs() < 4 * var * math.sqrt(2 / n)), (t, emp_var, var)


def test_linear_sde_equals_vp_to_1e8():
    vp = VPSDE(0.1, 20.0)
    lin = LinearSDE(Polynomial([-0.05, -9.95]), Polynomial([0.1, 19.9], sqrt=True))
    t = torch.cat([torch.logspace(-5, 0, 400, dtype=torch.float64), torch.rand(400).double()])
    t = t.clamp(1e-5, 1.0)
    for name in ("gamma", "sigma", "f", "g"):
        a, b = getattr(vp, name)(t), getattr(lin, name)(t)
        assert ((a - b).abs() / a.abs()).max() < 1e-8, name
    assert abs(lin.prior_std - 1.0) < 1e-8


def test_vp_sigma_accurate_near_zero():
    """σ_t² = −expm1(−∫β) keeps full relative precision where 1 − γ² would cancel."""
    vp = VPSDE(0.1, 20.0)
    t = torch.tensor([1e-10, 1e-7, 1e-4], dtype=torch.float64)
    int_beta = 0.1 * t + 0.5 * 19.9 * t**2
    # series: 1 − e^{−B} = B − B²/2 + B³/6
    exact = torch.sqrt(int_beta - int_beta**2 / 2 + int_beta**3 / 6)
    assert torch.allclose(vp.sigma(t), exact, rtol=1e-12, atol=0)
    assert vp.sigma(torch.zeros(1)).item() == 0.0
    # float32 input: computed in float64, returned in float32 with float32 precision
    s32 = vp.sigma(t.float())
    assert s32.dtype == torch.float32
    assert torch.allclose(s32.double(), exact, rtol=1e-6)


@pytest.mark.parametrize("name", list(SDES))
def test_ode_drift_is_the_derivative_of_the_gaussian_flow(name):
    """For data N(μ, s²) the PF-ODE solution is x_t = γ_t μ + r_t/r_T (x_T − γ_T μ),
    r_t² = γ_t² s² + σ_t²; its time derivative must equal ode_drift with the exact score."""
    sde = SDES[name]
    mu, s = torch.tensor([0.7, -1.2], dtype=torch.float64), 0.3
    x_T = torch.tensor([[0.4, 2.0], [-1.0, 0.1]], dtype=torch.float64)

    def path(t: float) -> torch.Tensor:
        tt = torch.full((2,), t, dtype=torch.float64)
        r = torch.sqrt(sde.gamma(tt) ** 2 * s**2 + sde.sigma(tt) ** 2)
        r_T = torch.sqrt(
            sde.gamma(torch.ones(2).double()) ** 2 * s**2 + sde.sigma(torch.ones(2).double()) ** 2
        )
        g_T = sde.gamma(torch.ones(2).double())
        return sde.gamma(tt)[:, None] * mu + (r / r_T)[:, None] * (x_T - g_T[:, None] * mu)

    for t in (0.2, 0.6):
        h = 1e-5
        fd = (path(t + h) - path(t - h)) / (2 * h)
        x = path(t)
        tt = torch.full((2,), t, dtype=torch.float64)
        var = sde.gamma(tt) ** 2 * s**2 + sde.sigma(tt) ** 2
        score = -(x - sde.gamma(tt)[:, None] * mu) / var[:, None]
        # the PF-ODE right-hand side the likelihood and the ODE solvers integrate
        ode = TimeCoordinates().rhs(sde, lambda y, u, sc=score: sc, x, t)
        assert torch.allclose(ode, fd, rtol=1e-6, atol=1e-6)
        # the reverse-SDE drift differs from the ODE drift by exactly ½ g² score
        f, g2 = sde.f(tt)[:, None], sde.g2(tt)[:, None]
        diff = drift(x, score, f, g2, 1.0) - ode
        assert torch.allclose(diff, -0.5 * sde.g2(tt)[:, None] * score, rtol=1e-12)


@pytest.mark.parametrize("name", list(SDES))
def test_g2_is_the_derivative_of_the_variance(name):
    """For a linear SDE: dσ²/dt = 2 f σ² + g² and d log γ/dt = f."""
    sde = SDES[name]
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    dvar = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    assert torch.allclose(dvar, 2 * sde.f(t) * sde.sigma(t) ** 2 + sde.g2(t), rtol=1e-6)
    dlog_gamma = (torch.log(sde.gamma(t + h)) - torch.log(sde.gamma(t - h))) / (2 * h)
    assert torch.allclose(dlog_gamma, sde.f(t), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(SDES))
def test_transition_composes_to_the_marginal(name):
    """q(x_t|x0) = ∫ q(x_t|x_s) q(x_s|x0): γ_t = γ_{t|s} γ_s and σ_t² = γ_{t|s}² σ_s² + σ_{t|s}²."""
    sde = SDES[name]
    s = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    t = torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64)
    gamma_ts, var_ts = sde.transition(s, t)
    assert torch.allclose(gamma_ts * sde.gamma(s), sde.gamma(t), rtol=1e-12)
    assert torch.allclose(gamma_ts**2 * sde.sigma(s) ** 2 + var_ts, sde.sigma(t) ** 2, rtol=1e-10)


@pytest.mark.parametrize("name", list(SDES))
def test_posterior_is_the_bayes_product(name):
    """q(x_s|x_t, x0) ∝ q(x_t|x_s) q(x_s|x0): check mean and variance by numeric quadrature."""
    sde = SDES[name]
    s, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.45], dtype=torch.float64)
    x0, xt = 0.8, -0.4
    a, b, v = sde.posterior(s, t)
    gamma_ts, var_ts = sde.transition(s, t)
    grid = (
        torch.linspace(-20, 20, 400001, dtype=torch.float64) * sde.sigma(s).item()
        + sde.gamma(s).item() * x0
    )
    log_w = -((xt - gamma_ts * grid) ** 2) / (2 * var_ts) - (grid - sde.gamma(s) * x0) ** 2 / (
        2 * sde.sigma(s) ** 2
    )
    w = torch.softmax(log_w, 0)
    mean = (w * grid).sum()
    var = (w * (grid - mean) ** 2).sum()
    assert torch.allclose(mean, a * xt + b * x0, rtol=1e-7)
    assert torch.allclose(var, v, rtol=1e-6)


def test_log_snr_inverse():
    t = torch.linspace(1e-4, 1.0, 50, dtype=torch.float64)
    for sde in SDES.values():
        assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(SDES))
def test_conversions_tweedie_and_noise(name):
    """For data N(μ, s²): x̂0(x) = E[x0|x_t] = μ + γ s²/(γ² s² + σ²)(x − γμ) (Tweedie), and
    ε̂ = −σ s, s = −ε̂/σ invert each other; the functions and the SDE methods agree."""
    sde = SDES[name]
    mu, s = torch.tensor([0.7, -1.2], dtype=torch.float64), 0.3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, dtype=torch.float64, generator=g)
    t = torch.rand(6, dtype=torch.float64, generator=g) * 0.9 + 0.05
    gamma, sigma = sde.gamma(t)[:, None], sde.sigma(t)[:, None]
    var = gamma**2 * s**2 + sigma**2
    score = -(x - gamma * mu) / var
    posterior_mean = mu + gamma * s**2 / var * (x - gamma * mu)
    assert torch.allclose(sde.x0_from_score(x, t, score), posterior_mean, rtol=1e-10)
    assert torch.allclose(x0_from_score(x, score, gamma, sigma), posterior_mean, rtol=1e-10)
    eps = sde.eps_from_score(x, t, score)
    assert torch.equal(eps, eps_from_score(score, sigma))
    assert torch.allclose(sde.score_from_eps(x, t, eps), score, rtol=1e-12)
    assert torch.allclose(score_from_eps(eps, sigma), score, rtol=1e-12)
    f, g2 = sde.f(t)[:, None], sde.g2(t)[:, None]
    # the drifts as the solvers reach them: Euler–Maruyama's noiseless step and the PF-ODE rhs
    h = 0.01

    def score_fn(y: torch.Tensor, tv: torch.Tensor) -> torch.Tensor:
        gam, sig = expand_as(sde.gamma(tv), y), expand_as(sde.sigma(tv), y)
        return -(y - gam * mu) / (gam**2 * s**2 + sig**2)

    for i, ti in enumerate(t.tolist()):
        xi, rev, ode = x[i : i + 1], drift(x, score, f, g2, 1.0)[i], drift(x, score, f, g2, 0.5)[i]
        ctx = StepContext(
            sde, ScoreFn(score_fn, sde), None, torch.tensor([ti, ti - h], dtype=torch.float64), 0
        )
        step = euler_maruyama_step(ctx, xi, ti, ti - h, noise=False)
        assert torch.allclose(step[0], x[i] - h * rev, rtol=1e-12, atol=1e-12)
        rhs = TimeCoordinates().rhs(
            sde, lambda y, u: score_fn(y, torch.full((1,), u, dtype=torch.float64)), xi, ti
        )
        assert torch.allclose(rhs[0], ode, rtol=1e-12, atol=1e-12)


def test_coefficients_are_the_schedule_functions():
    for sde in SDES.values():
        t = torch.tensor([0.0, 0.3, 1.0])
        c = sde.coefficients(t)
        for name in ("f", "g2", "gamma", "sigma"):
            assert torch.equal(getattr(c, name), getattr(sde, name)(t)), name


def test_ve_log_snr_inverse_is_closed_form():
    """VE's closed-form inverse t(λ) = log1p(e^{−λ}/σ_min²)/(2 log(σ_max/σ_min)) equals the
    generic bisection and inverts log_snr from t = 1e-6 to T."""
    ve = VESDE(0.01, 50.0)
    t = torch.logspace(-6, 0, 60, dtype=torch.float64)
    lam = ve.log_snr(t)
    assert torch.allclose(ve.t_from_log_snr(lam), t, rtol=1e-10)
    assert torch.allclose(ve.t_from_log_snr(lam), SDE.t_from_log_snr(ve, lam), rtol=1e-9)


def test_subvp_closed_forms_are_its_own():
    """Sub-VP composes the linear β of VP but none of VP's closed forms: its log-SNR and inverse
    equal the generic λ = 2 log γ − log σ² and its bisection inverse."""
    sub = SubVPSDE(0.1, 20.0)
    assert not isinstance(sub, VPSDE) and isinstance(sub.schedule, LinearBeta)
    t = torch.logspace(-4, 0, 60, dtype=torch.float64)
    assert torch.allclose(sub.log_snr(t), SDE.log_snr(sub, t), rtol=1e-12)
    lam = sub.log_snr(t)
    assert torch.allclose(sub.t_from_log_snr(lam), SDE.t_from_log_snr(sub, lam), rtol=1e-9)
    b = sub.schedule.integral(t)
    assert torch.allclose(sub.schedule.t_of_integral(b), t, rtol=1e-12)
    assert (sub.beta_min, sub.beta_max, sub.T) == (0.1, 20.0, 1.0)


def test_prior_logp_is_the_gaussian_density():
    for sde in SDES.values():
        z = torch.randn(5, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        ref = (
            torch.distributions.Normal(0.0, torch.tensor(sde.prior_std, dtype=torch.float64))
            .log_prob(z)
            .sum((1, 2))
        )
        assert torch.allclose(sde.prior_logp(z), ref, rtol=1e-10)


def test_prior_std_matches_the_marginal_at_T():
    assert SDES["vp"].prior_std == 1.0
    assert SDES["ve"].prior_std == 5.0
    # VE: σ_T² = σ_max² − σ_min², so the N(0, σ_max²) prior is exact up to σ_min²
    assert math.isclose(SDES["ve"].sigma(torch.ones(1)).item() ** 2, 25.0 - 1e-4, rel_tol=1e-6)


def test_marginal_sample_uses_given_noise():
    sde = SDES["vp"]
    x0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    eps = torch.randn(4, 3, dtype=torch.float64)
    xt = sde.marginal_sample(x0, t, eps)
    assert torch.allclose(xt, sde.gamma(t)[:, None] * x0 + sde.sigma(t)[:, None] * eps)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VPSDE(beta_min=20.0, beta_max=0.1), "beta_min=20.0"),
        (lambda: VPSDE(beta_min=-1.0, beta_max=1.0), "beta_min=-1.0"),
        (lambda: VESDE(sigma_min=5.0, sigma_max=5.0), "sigma_min=5.0"),
        (lambda: VPSDE(T=0.0), "T=0.0"),
        (lambda: Polynomial([]), "coeffs"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_times_and_shapes():
    sde = VPSDE()
    with pytest.raises(ValueError, match="t=1.5"):
        sde.sigma(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="t=-0.1"):
        sde.gamma(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="nan"):
        sde.gamma(torch.tensor([float("nan")]))
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        sde.marginal_sample(x0, torch.rand(3))
    with pytest.raises(ValueError, match="noise shape"):
        sde.marginal_sample(x0, torch.rand(4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="torch.Tensor"):
        sde.sigma(0.5)
