"""SDE-DPM-Solver++ (Lu et al. 2022b): its exact SDE weights, first order = DDIM η = 1,
2M SDE equal to diffusers' DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++") under
the same noise, the 3M SDE's D₂ weight against diffusers', and samples within the Monte Carlo
floor of MMD² against exact mixture samples."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from scipy.integrate import quad

from sde_gen.data import ring_mixture
from sde_gen.metrics.mixtures import median_bandwidth, mmd2_unbiased, monte_carlo_floor
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DDIM, SDEDPMSolver
from sde_gen.solvers.grids import LogSNRGrid
from sde_gen.solvers.sde_dpm_solver import sde_weights

F64 = torch.float64


@pytest.mark.parametrize("h", [1e-4, 0.05, 0.7, 3.0])
def test_weights_are_the_integrals_of_the_sde_step(h):
    """w_k = ∫_0^h 2 e^{−2(h−u)} u^k/k! du · (k! / h^k) · c_k with D₁ ≈ h x̂0′, D₂ ≈ ½h² x̂0″."""
    w0, w1, w2 = sde_weights(h)
    exact = [
        quad(lambda u, k=k: 2 * math.exp(-2 * (h - u)) * u**k / math.factorial(k), 0, h)[0]
        for k in range(3)
    ]
    assert w0 == pytest.approx(exact[0], rel=1e-10)
    assert w1 == pytest.approx(exact[1] / h, rel=1e-10)
    assert w2 == pytest.approx(2 * exact[2] / h**2, rel=1e-10)


def test_order_one_is_ddim_eta_one():
    """(σ_s/σ_t)e^{−h} x + γ_s(1 − e^{−2h}) x̂0 + σ_s√(1 − e^{−2h}) z is DDIM's η = 1 step."""
    sde, mixture = VPSDE(), ring_mixture(num_modes=4, std=0.5)
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=F64)
    a = SDEDPMSolver(7, order=1)(sde, mixture.score_fn(sde), x_T, torch.Generator().manual_seed(1))
    b = DDIM(7, grid=LogSNRGrid(), eta=1.0)(
        sde, mixture.score_fn(sde), x_T, torch.Generator().manual_seed(1)
    )
    assert torch.allclose(a.x0, b.x0, rtol=0, atol=1e-12)


def _chain_run(order, variant, steps, seed=3):
    """Ours and diffusers' on our λ-uniform grid of the DDPM chain, the same N(0, I) draws."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import scheduler_on_grid  # noqa: PLC0415

    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    solver = SDEDPMSolver(steps, order=order, variant=variant, lower_order_final=steps < 15)
    ours = solver(sde, score, x_T, torch.Generator().manual_seed(seed), record=True)
    draws = torch.Generator().manual_seed(seed)
    noises = [torch.randn(x_T.shape, generator=draws, dtype=F64) for _ in range(steps)]
    sched = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear",
        algorithm_type="sde-dpmsolver++",
        solver_order=order,
        solver_type="heun" if variant == "exact" else "midpoint",
    )
    theirs = scheduler_on_grid(sched, sde, score, x_T, solver.time_grid(sde), noises=noises)
    return sde, score, solver, ours, theirs


@pytest.mark.parametrize("order,variant", [(1, "midpoint"), (2, "midpoint"), (2, "exact")])
@pytest.mark.parametrize("steps", [8, 20])
def test_matches_diffusers_sde_dpmsolver_under_the_same_noise(order, variant, steps):
    """Every state within 1e-5 relative (diffusers steps in float32 whatever the input dtype)."""
    *_, ours, theirs = _chain_run(order, variant, steps)
    assert ours.nfe == steps == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_3m_sde_differs_from_diffusers_by_its_d2_weight():
    """The first two steps agree; at the first third-order step ours − diffusers' is
    γ_s (4hφ₃(−2h) − w_d) D₂ with diffusers' w_d = (1 − e^{−2h} − 2h)/(4h²) − ½ ≈ −1."""
    sde, score, solver, ours, theirs = _chain_run(3, "exact", 8)
    for a, b in zip(ours.trajectory[:3], theirs[:3], strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    times = solver.time_grid(sde)

    def lam_x0(i):
        t = torch.full((64,), float(times[i]), dtype=F64)
        x = ours.trajectory[i]
        return float(sde.log_snr(t[:1])[0]) / 2, sde.x0_from_score(x, t, score(x, t))

    (l2, m2), (l1, m1), (l0, m0) = lam_x0(0), lam_x0(1), lam_x0(2)
    h = float(sde.log_snr(times[3:4])[0]) / 2 - l0
    r0, r1 = (l0 - l1) / h, (l1 - l2) / h
    d2 = ((m0 - m1) / r0 - (m1 - m2) / r1) / (r0 + r1)
    w_theirs = (-math.expm1(-2 * h) - 2 * h) / (4 * h * h) - 0.5
    assert w_theirs < -0.5 and 0 < sde_weights(h)[2] < 0.7 * h  # ≈ −1 + h/3 against ≈ 2h/3
    gamma_s = float(sde.gamma(times[3:4])[0])
    expected = gamma_s * (sde_weights(h)[2] - w_theirs) * d2
    difference = ours.trajectory[3] - theirs[3]
    assert (difference - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_samples_are_within_the_monte_carlo_floor_of_mmd2():
    """30 steps of 2M and 3M SDE on the ring: MMD² against exact samples below 4 RMS of the
    exact-vs-exact floor; 4 steps of the first order are far above it (the test can fail)."""
    sde, mixture, n = VPSDE(), ring_mixture(std=0.15), 800
    reference = mixture.sample64(n, torch.Generator().manual_seed(100))
    bandwidth = median_bandwidth(reference)

    def metric(a, b):
        return mmd2_unbiased(a, b, bandwidth)

    floor = monte_carlo_floor(metric, mixture.sample64, n, seeds=range(4))
    x_T = sde.prior_sample((n, 2), torch.Generator().manual_seed(1), dtype=F64)
    for order, steps, far in [(2, 30, False), (3, 30, False), (1, 4, True)]:
        x0 = SDEDPMSolver(steps, order=order)(
            sde, mixture.score_fn(sde), x_T, torch.Generator().manual_seed(2)
        ).x0
        mmd2 = metric(x0, reference)
        assert (mmd2 > 10 * floor.rms) if far else (mmd2 < 4 * floor.rms), (order, mmd2, floor)
