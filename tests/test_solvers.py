"""Reverse-time solvers against closed forms: on Gaussian data N(μ, s²I) the score is exact and the
PF-ODE path from x_T is x_t = γ_t μ + √(γ_t² s² + σ_t²)/√(γ_T² s² + σ_T²) (x_T − γ_T μ)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sde_gen.data import GaussianMixture
from sde_gen.sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from sde_gen.sde.ddpm import LinearSchedule
from sde_gen.solvers import (
    DDIM,
    PFODE,
    Ancestral,
    DPMSolver,
    EulerMaruyama,
    Heun,
    PredictorCorrector,
    ScipyODE,
    TorchsdeODE,
    TorchsdeSolver,
)
from sde_gen.solvers.grids import KarrasGrid, LogSNRGrid, QuadraticGrid
from sde_gen.solvers.pf_ode import SCIPY_METHODS, ScaledCoordinates
from sde_gen.solvers.torchsde_adapter import METHODS

F64 = torch.float64


MU = torch.tensor([[1.0, -0.5]], dtype=F64)
S = 0.5
T_MIN = 1e-3


def gaussian() -> GaussianMixture:
    return GaussianMixture([1.0], MU, S)


def prior(sde: SDE, n: int = 8, seed: int = 0) -> torch.Tensor:
    return sde.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=F64)


def _c(sde: SDE, fn, t: float) -> float:
    return float(fn(torch.tensor([t], dtype=F64))[0])


def pf_ode_exact(sde: SDE, x_T: torch.Tensor, t: float) -> torch.Tensor:
    """Closed-form PF-ODE solution for N(μ, s²I) data."""
    g_t, s_t = _c(sde, sde.gamma, t), _c(sde, sde.sigma, t)
    g_T, s_T = _c(sde, sde.gamma, sde.T), _c(sde, sde.sigma, sde.T)
    scale = math.sqrt(g_t**2 * S**2 + s_t**2) / math.sqrt(g_T**2 * S**2 + s_T**2)
    return g_t * MU + scale * (x_T - g_T * MU)


def slope(sde: SDE, make, steps: list[int]) -> tuple[float, list[float]]:
    """Log–log slope of the end-point error max|x̂(t_min) − x(t_min)| against the step count."""
    x_T = prior(sde)
    exact = pf_ode_exact(sde, x_T, T_MIN)
    errs = [
        (make(n)(sde, gaussian().score_fn(sde), x_T).x0 - exact).abs().max().item() for n in steps
    ]
    return -float(np.polyfit(np.log(steps), np.log(errs), 1)[0]), errs


# -- convergence orders: the measured slope lies in [p − below, p + above] around the solver's
# declared ``order`` p (Euler/DDIM 1, Heun and DPM-Solver++(2M) 2, DPM-Solver++(3M) 3), measured
# to t_min (``final_step="t_min"``: the x̂0 jump to 0 has an error that does not shrink with h) ---
ORDER_CASES = [
    (
        "ddim",
        lambda n: DDIM(n, T_MIN, LogSNRGrid(), final_step="t_min"),
        [16, 32, 64, 128],
        0.15,
        0.15,
    ),
    ("heun", lambda n: Heun(n, T_MIN, KarrasGrid()), [16, 32, 64, 128], 0.2, 0.3),
    (
        "dpm2",
        lambda n: DPMSolver(n, T_MIN, LogSNRGrid(), order=2, final_step="t_min"),
        [32, 64, 128, 256],
        0.15,
        0.2,
    ),
    (
        "dpm3",
        lambda n: DPMSolver(n, T_MIN, LogSNRGrid(), order=3, final_step="t_min"),
        [16, 32, 64, 128],
        0.5,
        2.0,
    ),
    ("torchsde_euler", lambda n: PFODE(TorchsdeODE("euler", n), T_MIN), [64, 128, 256], 0.15, 0.15),
    (
        "torchsde_midpoint",
        lambda n: PFODE(TorchsdeODE("midpoint", n), T_MIN),
        [64, 128, 256],
        0.2,
        0.3,
    ),
]


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), SubVPSDE()], ids=["vp", "ve", "subvp"])
@pytest.mark.parametrize(
    "name,make,steps,below,above", ORDER_CASES, ids=[c[0] for c in ORDER_CASES]
)
def test_convergence_order(sde, name, make, steps, below, above):
    declared = make(steps[0]).order
    order, errs = slope(sde, make, steps)
    assert declared - below <= order <= declared + above, (
        f"{name}: order {order:.2f} (declared {declared}), errors {errs}"
    )
    assert errs[-1] < 0.1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_torchsde_method_order_is_the_declared_one(method):
    """Each torchsde method on the PF-ODE (VP): slope within [p − 0.15, p + 0.3] of its order."""
    order, errs = slope(VPSDE(), lambda n: PFODE(TorchsdeODE(method, n), T_MIN), [64, 128, 256])
    declared = METHODS[method].order
    assert declared - 0.15 <= order <= declared + 0.3, (method, order, errs)


def test_dpm3_reference_weight_is_second_order():
    """With the weight φ₃ on D₂ (dpm_solver_pytorch, diffusers) 3M has order 2; ours (2φ₃) ≥ 2.5."""
    sde = VPSDE()
    x_T = prior(sde)
    exact = pf_ode_exact(sde, x_T, T_MIN)
    steps = [32, 64, 128, 256]
    errs = [(_dpm3_reference(n, sde, x_T) - exact).abs().max().item() for n in steps]
    order = -float(np.polyfit(np.log(steps), np.log(errs), 1)[0])
    assert 1.8 <= order <= 2.2, errs


def _dpm3_reference(steps: int, sde: SDE, x_T: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(3M) as in the reference code (D₂ weighted by φ₃), on the log-SNR grid."""
    score = gaussian().score_fn(sde)
    times = (
        DPMSolver(steps, T_MIN, LogSNRGrid(), order=3, final_step="t_min").time_grid(sde).tolist()
    )
    x, hist = x_T, []
    for t, s in zip(times[:-1], times[1:], strict=True):
        g_t, s_t, g_s, s_s = (_c(sde, f, u) for u in (t, s) for f in (sde.gamma, sde.sigma))
        lam_t, lam_s = math.log(g_t / s_t), math.log(g_s / s_s)
        h = lam_s - lam_t
        m0 = (x + s_t**2 * score(x, torch.full((x.shape[0],), t, dtype=F64))) / g_t
        phi1 = math.expm1(-h)
        if len(hist) == 0:
            x_new = s_s / s_t * x - g_s * phi1 * m0
        elif len(hist) == 1:
            r0 = (lam_t - hist[-1][0]) / h
            x_new = s_s / s_t * x - g_s * phi1 * (m0 + 0.5 * (m0 - hist[-1][1]) / r0)
        else:
            (lam2, m2), (lam1, m1) = hist[-2], hist[-1]
            r0, r1 = (lam_t - lam1) / h, (lam1 - lam2) / h
            d10, d11 = (m0 - m1) / r0, (m1 - m2) / r1
            d1, d2 = d10 + r0 / (r0 + r1) * (d10 - d11), (d10 - d11) / (r0 + r1)
            phi2 = phi1 / h + 1
            phi3 = phi2 / h - 0.5
            x_new = s_s / s_t * x - g_s * phi1 * m0 + g_s * phi2 * d1 - g_s * phi3 * d2
        hist = (hist + [(lam_t, m0)])[-2:]
        x = x_new
    return x


# -- probability-flow ODE backends ------------------------------------------------------------
@pytest.mark.parametrize("method", SCIPY_METHODS)
def test_pf_ode_scipy_matches_closed_form(method):
    sde = VPSDE()
    x_T = prior(sde, n=4)
    res = PFODE(ScipyODE(method, rtol=1e-8, atol=1e-8), T_MIN)(sde, gaussian().score_fn(sde), x_T)
    assert (res.x0 - pf_ode_exact(sde, x_T, T_MIN)).abs().max() < 2e-6
    assert res.nfe > 10


@pytest.mark.parametrize(
    "sde", [VPSDE(), VESDE(), DiscreteVPSDE(LinearSchedule().betas)], ids=["vp", "ve", "ddpm"]
)
def test_pf_ode_scaled_coordinates_match_closed_form(sde):
    """The PF-ODE in y = x/γ, u = log σ̃ is the same ODE: the closed-form end point, and the
    recorded path at the requested t equals the closed form there too."""
    x_T = prior(sde, n=4)
    solver = PFODE(ScipyODE("DOP853", 1e-10, 1e-10, ScaledCoordinates()), T_MIN, record_points=5)
    res = solver(sde, gaussian().score_fn(sde), x_T, record=True)
    assert (res.x0 - pf_ode_exact(sde, x_T, T_MIN)).abs().max() < 1e-6
    for t, x in zip(res.times.tolist()[1:-1], res.trajectory[1:-1], strict=True):
        assert (x - pf_ode_exact(sde, x_T, t)).abs().max() < 1e-5


def test_pf_ode_scaled_coordinates_survive_a_discrete_schedule():
    """On the DDPM chain β(t) jumps at 1000 nodes: RK45 in t stalls (its error control is fooled),
    RK45 in the smooth scaled variables reaches a 10× smaller error with fewer NFE."""
    sde = DiscreteVPSDE(LinearSchedule().betas)
    x_T = prior(sde, n=64)
    score = gaussian().score_fn(sde)
    exact = pf_ode_exact(sde, x_T, T_MIN)
    plain = PFODE(ScipyODE("RK45", 1e-6, 1e-6), T_MIN)(sde, score, x_T)
    scaled = PFODE(ScipyODE("RK45", 1e-6, 1e-6, ScaledCoordinates()), T_MIN)(sde, score, x_T)
    err_plain = (plain.x0 - exact).abs().max()
    err_scaled = (scaled.x0 - exact).abs().max()
    assert err_scaled < 1e-5 and err_scaled < 0.1 * err_plain
    assert scaled.nfe < plain.nfe


def test_discrete_vpsde_log_snr_inverse_is_exact():
    sde = DiscreteVPSDE(LinearSchedule().betas)
    t = torch.linspace(1e-3, 1.0, 997, dtype=F64)
    assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t, atol=1e-12)


def test_pf_ode_scipy_and_torchsde_agree():
    sde = VESDE()
    x_T = prior(sde)
    score = gaussian().score_fn(sde)
    a = PFODE(ScipyODE("DOP853", 1e-9, 1e-9), T_MIN)(sde, score, x_T)
    b = PFODE(TorchsdeODE("midpoint", 20, adaptive=True, rtol=1e-7, atol=1e-7), T_MIN)(
        sde, score, x_T
    )
    exact = pf_ode_exact(sde, x_T, T_MIN)
    assert (a.x0 - exact).abs().max() < 1e-6
    assert (b.x0 - exact).abs().max() < 1e-4
    assert (a.x0 - b.x0).abs().max() < 1e-4


# -- stochastic samplers reproduce the marginal q_{t_min} ------------------------------------
STDS = torch.tensor([[0.6, 0.3]], dtype=F64)


def assert_marginal(x: torch.Tensor, sde: SDE, t: float, n_se: float = 4.0) -> None:
    """Mean, per-axis variance and covariance of x equal those of q_t = N(γμ, γ²s² + σ²) within
    n_se Monte Carlo standard errors (SE of a variance v √(2/(n−1)), of a covariance √(v₁v₂/n))."""
    n = x.shape[0]
    g, sig = _c(sde, sde.gamma, t), _c(sde, sde.sigma, t)
    mean, var = g * MU[0], g**2 * STDS[0] ** 2 + sig**2
    se_mean = (var / n).sqrt()
    assert ((x.mean(0) - mean).abs() < n_se * se_mean).all(), (x.mean(0), mean)
    se_var = var * math.sqrt(2 / (n - 1))
    assert ((x.var(0) - var).abs() < n_se * se_var).all(), (x.var(0), var)
    cov = torch.cov(x.T)[0, 1]
    assert abs(cov) < n_se * math.sqrt(var[0] * var[1] / n), cov


@pytest.mark.parametrize(
    "solver",
    [
        EulerMaruyama(steps=400, t_min=T_MIN),
        TorchsdeSolver("euler", steps=400, t_min=T_MIN, denoise_final=False),
        TorchsdeSolver("reversible_heun", steps=200, t_min=T_MIN, denoise_final=False),
        PredictorCorrector(steps=200, t_min=T_MIN, denoise_final=False, snr=0.1),
        Ancestral(steps=200, t_min=T_MIN, denoise_final=False),
    ],
    ids=["euler_maruyama", "torchsde_euler", "torchsde_reversible_heun", "pc", "ancestral"],
)
def test_stochastic_solver_matches_marginal(solver):
    sde = VPSDE()
    data = GaussianMixture([1.0], MU, STDS)
    x_T = sde.prior_sample((4000, 2), torch.Generator().manual_seed(1), dtype=F64)
    x = solver(sde, data.score_fn(sde), x_T, generator=torch.Generator().manual_seed(2)).x0
    assert_marginal(x, sde, T_MIN)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_torchsde_method_samples_the_marginal(method):
    """Each torchsde method (additive noise: Itô = Stratonovich) on 1000 samples matches q_{t_min}
    within 4 standard errors: 100 steps, 300 for reversible Heun, whose stability region holds
    no damping (at 100 steps its variance of the narrow axis is 3× too large)."""
    sde = VPSDE()
    data = GaussianMixture([1.0], MU, STDS)
    x_T = sde.prior_sample((1000, 2), torch.Generator().manual_seed(8), dtype=F64)
    steps = 300 if method == "reversible_heun" else 100
    solver = TorchsdeSolver(method, steps=steps, t_min=T_MIN, denoise_final=False)
    x = solver(sde, data.score_fn(sde), x_T, generator=torch.Generator().manual_seed(9)).x0
    assert_marginal(x, sde, T_MIN)


def test_ancestral_reproduces_mixture():
    """NLL gap |E_gen[−log p] − E_data[−log p]| < 4 combined standard errors + 0.02 nats."""
    mix = GaussianMixture(
        [0.5, 0.3, 0.2],
        [[-1.5, 0.0], [1.0, 1.0], [1.0, -1.2]],
        [[0.4, 0.2], [0.1, 0.1], [0.05, 0.3]],
    )
    sde = VPSDE()
    n = 3000
    x_T = sde.prior_sample((n, 2), torch.Generator().manual_seed(3), dtype=F64)
    for variance in ("beta", "beta_tilde"):
        solver = Ancestral(steps=500, t_min=T_MIN, variance=variance)
        x = solver(sde, mix.score_fn(sde), x_T, generator=torch.Generator().manual_seed(4)).x0
        nll_gen = -mix.log_prob(x)
        nll_data = -mix.log_prob(mix.sample64(n, torch.Generator().manual_seed(5)))
        gap = (nll_gen.mean() - nll_data.mean()).abs().item()
        se = math.sqrt(nll_gen.var().item() / n + nll_data.var().item() / n)
        assert gap < 4 * se + 0.02, (variance, gap, se)


# -- exact identities ------------------------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ancestral_is_the_ddpm_chain(variance):
    """On DiscreteVPSDE with steps = N, t_min = 1/N: survey Algorithm 2 with the chain's β_t."""
    sched = LinearSchedule(T=20, beta_start=1e-3, beta_end=0.2)
    sde = DiscreteVPSDE(sched.betas)
    data = gaussian()
    score = data.score_fn(sde)
    x_T = prior(sde, n=6)
    res = Ancestral(steps=20, t_min=1 / 20, variance=variance)(
        sde, score, x_T, generator=torch.Generator().manual_seed(7)
    )
    gen = torch.Generator().manual_seed(7)
    x = x_T
    for i in range(20, 0, -1):
        ti = torch.full((6,), i / 20, dtype=F64)
        eps = -math.sqrt(1 - sched.alpha_bar[i - 1].item()) * score(x, ti)
        alpha, beta = sched.alphas[i - 1].item(), sched.betas[i - 1].item()
        x = (x - beta / math.sqrt(1 - sched.alpha_bar[i - 1].item()) * eps) / math.sqrt(alpha)
        if i > 1:
            var = beta if variance == "beta" else sched.posterior_variance[i - 1].item()
            x = x + math.sqrt(var) * torch.randn(x.shape, generator=gen, dtype=F64)
    assert res.nfe == 20
    assert torch.allclose(res.x0, x, rtol=0, atol=1e-10)


def test_ddim_eta1_is_ancestral_beta_tilde():
    sde = VPSDE()
    score = gaussian().score_fn(sde)
    x_T = prior(sde)
    a = DDIM(10, T_MIN, QuadraticGrid(), eta=1.0, final_step="t_min", denoise_final=True)(
        sde, score, x_T, generator=torch.Generator().manual_seed(0)
    )
    b = Ancestral(11, T_MIN, QuadraticGrid(), variance="beta_tilde")(
        sde, score, x_T, generator=torch.Generator().manual_seed(0)
    )
    assert a.nfe == b.nfe == 11
    assert torch.allclose(a.x0, b.x0, atol=1e-12, rtol=0)


def test_ddim_eta0_ve_is_euler_in_sigma():
    """On VE (γ = 1), DDIM(η=0) is x_s = x_t + (σ_s − σ_t) ε̂ = x_t + (σ_t² − σ_s σ_t) s_θ."""
    sde = VESDE()
    score = gaussian().score_fn(sde)
    x_T = prior(sde)
    res = DDIM(1, 0.5, final_step="t_min")(sde, score, x_T)
    s_T, s_h = _c(sde, sde.sigma, 1.0), _c(sde, sde.sigma, 0.5)
    expect = x_T + (s_T**2 - s_h * s_T) * score(x_T, torch.ones(8, dtype=F64))
    assert torch.allclose(res.x0, expect, atol=1e-12, rtol=0)


# -- x̂0 clamped to the data range (improved-diffusion's clip_denoised) ----------------------
def test_clip_x0_is_the_posterior_mean_with_a_clamped_denoiser():
    """Where the clamp does not bind ([−50, 50] on N(μ, s² I) data) the posterior-mean form
    a x_t + b x̂0 gives the same chain as (x_t + β s)/γ_{t|s} to 1e-10; with [−0.1, 0.1] every
    output lies in the interval (the last step is the clamped x̂0)."""
    sde, data = VPSDE(), gaussian()
    x_T = prior(sde, n=64)
    plain = Ancestral(steps=12, t_min=T_MIN)(
        sde, data.score_fn(sde), x_T, generator=torch.Generator().manual_seed(1)
    )
    wide = Ancestral(steps=12, t_min=T_MIN, clip_x0=(-50.0, 50.0))(
        sde, data.score_fn(sde), x_T, generator=torch.Generator().manual_seed(1)
    )
    assert torch.allclose(wide.x0, plain.x0, rtol=0, atol=1e-10)
    narrow = Ancestral(steps=12, t_min=T_MIN, clip_x0=(-0.1, 0.1))(
        sde, data.score_fn(sde), x_T, generator=torch.Generator().manual_seed(1)
    )
    assert narrow.x0.abs().max() <= 0.1 and (plain.x0.abs() > 0.1).any()
    with pytest.raises(ValueError, match=r"clip_x0=\[1.0, -1.0\] must have a < b"):
        Ancestral(clip_x0=(1.0, -1.0))


def test_clip_x0_tames_the_first_step_of_a_short_cosine_chain():
    """The cosine chain (γ_T ≈ 5e-5) sampled in 10 steps with a score whose ε is off by 1e-2:
    the first step, T → t_1 ≈ 0.89, multiplies that error by σ²_{t|s}/(σ_t γ_{t|s}) > 1000, so
    without the clamp x_{t_1} is far outside the marginal q_{t_1} (|x| > 10 where its std is ≈ 1;
    a network evaluated there gives no useful ε and the error grows on). With x̂0 clamped to
    [−2, 2], |x_{t_1}| ≤ a|x_T| + 2b < 6 and the output lies in [−2, 2]."""
    from sde_gen.sde.ddpm import cosine_betas

    sde = DiscreteVPSDE(cosine_betas(T=1000, s=0.008, max_beta=0.999))
    data = GaussianMixture([1.0], torch.zeros(1, 2, dtype=F64), 0.5)
    exact = data.score_fn(sde)

    def score(x, t):  # ε_θ = ε + 0.01: a small, fixed network error
        return exact(x, t) - 0.01 / sde.sigma(t)[:, None]

    x_T, runs = prior(sde, n=200), {}
    for clip in (None, (-2.0, 2.0)):
        solver = Ancestral(steps=10, t_min=1e-3, variance="beta_tilde", clip_x0=clip)
        t, s = solver.time_grid(sde)[:2, None]
        gamma_ts, var_ts = sde.transition(s, t)
        assert float(var_ts / (sde.sigma(t) * gamma_ts)) > 1000
        runs[clip] = solver(
            sde, score, x_T, generator=torch.Generator().manual_seed(0), record=True
        )
    assert runs[None].trajectory[1].abs().max() > 10
    clipped = runs[(-2.0, 2.0)]
    assert clipped.trajectory[1].abs().max() < 6 and clipped.x0.abs().max() <= 2.0
