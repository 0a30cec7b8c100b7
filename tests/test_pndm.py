"""Pseudo numerical methods (Liu et al. 2022; iPNDM of Zhang & Chen 2022): Adams–Bashforth
weights, the DDIM transfer, convergence orders on a mixture's exact PF-ODE flow, and state-by-state
agreement with diffusers' PNDMScheduler (PLMS and PRK start) and IPNDMScheduler on the same grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from orders import assert_first_order_is_ddim

from sde_gen.data import ring_mixture
from sde_gen.metrics.mixtures import mixture_flow
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import PNDM
from sde_gen.solvers.grids import KarrasGrid, LogSNRGrid, TrailingGrid
from sde_gen.solvers.pndm import ADAMS_BASHFORTH

F64 = torch.float64
MIXTURE = ring_mixture(num_modes=4, std=0.5)


def test_adams_bashforth_weights_integrate_polynomials_exactly():
    """On nodes 0, −1, −2, −3 (in steps), Σ_j b_j (−j)^m = ∫_0^1 u^m du = 1/(m + 1), m < k."""
    for k, weights in enumerate(ADAMS_BASHFORTH, start=1):
        assert len(weights) == k
        for m in range(k):
            got = sum(b * (-j) ** m for j, b in enumerate(weights))
            assert got == pytest.approx(1 / (m + 1), abs=1e-14)


def test_order_one_is_ddim():
    """The transfer with ε′ = ε̂_t is DDIM (Liu et al. eq. 9 = Song et al. eq. 12, η = 0)."""
    assert_first_order_is_ddim(PNDM(7, 1e-2, LogSNRGrid(), order=1), 1e-2)


def _errors(sde, grid, t_min, make, steps):
    x_T = sde.prior_sample((8, 2), torch.Generator().manual_seed(0), dtype=F64)
    exact = mixture_flow(MIXTURE, sde, x_T, t_min, rtol=1e-12, atol=1e-12)[0]
    errs = [
        (make(n, t_min, grid)(sde, MIXTURE.score_fn(sde), x_T).x0 - exact).abs().max().item()
        for n in steps
    ]
    return -float(np.polyfit(np.log(steps), np.log(errs), 1)[0]), errs


@pytest.mark.parametrize("order", [1, 2, 4])
def test_declared_order_on_a_log_snr_grid(order):
    """Unequal steps in ρ: the measured order is the declared min(order, 2) within 0.25."""
    solver = PNDM(order=order)
    measured, errs = _errors(
        VPSDE(), LogSNRGrid(), 1e-2, lambda n, t, g: PNDM(n, t, g, order=order), [32, 64, 128]
    )
    assert abs(measured - solver.order) < 0.25, (measured, errs)


@pytest.mark.parametrize("start,order,tol", [("runge_kutta", 4, 0.5), ("euler", 3, 0.4)])
def test_adams_bashforth_order_on_a_grid_uniform_in_rho(start, order, tol):
    """KarrasGrid(rho=1) is uniform in ρ = σ̃: the weights are exact and AB-k shows order k
    (VE, σ from 3 down to 0.17)."""
    sde = VESDE(sigma_min=0.01, sigma_max=3.0)
    measured, errs = _errors(
        sde,
        KarrasGrid(rho=1.0),
        0.5,
        lambda n, t, g: PNDM(n, t, g, order=order, start=start),
        [32, 64, 128],
    )
    assert abs(measured - order) < tol, (measured, errs)


# -- diffusers: float64 schedulers on our trailing grid of the DDPM chain -----------------------
STEPS = 10


def _chain_case():
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    return sde, score, x_T


def _peer_states(scheduler, model, x_T):
    """diffusers' pipeline loop in float64: x ← step(model(x, τ), τ, x) for each τ."""
    x, states = x_T, [x_T]
    for tau in scheduler.timesteps:
        x = scheduler.step(model(x, tau), tau, x).prev_sample
        states.append(x)
    return states


@pytest.mark.parametrize(
    "start,skip_prk,done",
    [
        ("heun", True, [0, 2, *range(3, STEPS + 2)]),  # state 1 is the Heun predictor
        ("runge_kutta", False, [0, 4, 8, *range(12, 3 * 3 + STEPS + 1)]),  # 4 calls per PRK step
    ],
)
def test_matches_diffusers_pndm_on_the_same_grid(start, skip_prk, done):
    """PLMS (skip_prk_steps) and PNDM (PRK start): every completed step equals diffusers'
    PNDMScheduler with our ᾱ in float64 on the trailing grid to 1e-12 relative, same NFE."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import ExactEps  # noqa: PLC0415

    sde, score, x_T = _chain_case()
    solver = PNDM(STEPS, grid=TrailingGrid(), start=start)
    ours = solver(sde, score, x_T, record=True)
    sched = diffusers.PNDMScheduler(
        beta_schedule="linear", timestep_spacing="trailing", skip_prk_steps=skip_prk
    )
    sched.set_timesteps(STEPS)
    sched.alphas_cumprod = torch.exp(sde._log_alpha_bar[1:])
    sched.final_alpha_cumprod = sched.alphas_cumprod[0]  # the step from k = 0 ends at t = 1/N
    eps = ExactEps(sde, score, sched.alphas_cumprod.numpy())
    theirs = _peer_states(sched, eps, x_T)
    assert ours.nfe == eps.nfe == solver.expected_nfe() == len(theirs) - 1
    assert len(done) == len(ours.trajectory)
    for a, i in zip(ours.trajectory, done, strict=True):
        assert (a - theirs[i]).abs().max() <= 1e-12 * theirs[i].abs().max()


def test_ipndm_matches_diffusers_ipndm_on_the_same_grid():
    """diffusers' IPNDMScheduler works in the angle form (α, σ with α² + σ² = 1) on a
    v-prediction, ε̂ = σ x + α v: given our grid's (γ, σ) and the exact v, every state equals
    ours (``start='euler'``) to 1e-12 relative."""
    diffusers = pytest.importorskip("diffusers")
    sde, score, x_T = _chain_case()
    solver = PNDM(STEPS, grid=TrailingGrid(), start="euler")
    ours = solver(sde, score, x_T, record=True)
    sched = diffusers.IPNDMScheduler()
    sched.set_timesteps(STEPS)
    times = solver.time_grid(sde)
    sched.alphas, sched.betas = sde.gamma(times), sde.sigma(times)  # γ² + σ² = 1 on the chain
    time_of = dict(zip(sched.timesteps.tolist(), times.tolist(), strict=False))

    def v_prediction(x, tau):
        t = torch.full((x.shape[0],), time_of[float(tau)], dtype=F64)
        gamma, sigma = sde.gamma(t)[:, None], sde.sigma(t)[:, None]
        eps = sde.eps_from_score(x, t, score(x, t))
        return gamma * eps - sigma * (x - sigma * eps) / gamma

    theirs = _peer_states(sched, v_prediction, x_T)
    assert ours.nfe == STEPS == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()


def test_matches_diffusers_plms_pipeline_in_float32():
    """diffusers' own loop (float32 ᾱ, its 10 trailing timesteps): the end point is ours within
    1e-5 relative."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import DiffusersSampler  # noqa: PLC0415

    sde, score, x_T = _chain_case()
    ours = PNDM(STEPS, grid=TrailingGrid(), start="heun")(sde, score, x_T)
    sched = diffusers.PNDMScheduler(
        beta_schedule="linear", timestep_spacing="trailing", skip_prk_steps=True
    )
    theirs = DiffusersSampler(sched, STEPS, ends_at_zero=False)(sde, score, x_T)
    assert theirs.nfe == ours.nfe == STEPS + 1
    assert (ours.x0 - theirs.x0.double()).abs().max() <= 1e-5 * theirs.x0.abs().max()
