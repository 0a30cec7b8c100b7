"""DEIS tAB-k (Zhang & Chen 2022): its exact integrals of the log-ρ Lagrange basis, its
convergence order on a mixture's exact PF-ODE flow, and step-by-step agreement with diffusers'
DEISMultistepScheduler on the same grid."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from orders import assert_first_order_is_ddim

from sde_gen.data import ring_mixture
from sde_gen.metrics.mixtures import mixture_flow
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DEIS
from sde_gen.solvers.deis import deis_weights
from sde_gen.solvers.grids import LogSNRGrid, TrailingGrid

F64 = torch.float64
T_MIN = 1e-2


def test_weights_integrate_polynomials_in_log_rho_exactly():
    """Σ_j w_j p(u_j) = ∫_{ρ_t}^{ρ_s} p(log ρ) dρ for p of degree < k, with the closed forms
    ∫ e^u du = e^u, ∫ u e^u du = (u − 1) e^u, ∫ u² e^u du = (u² − 2u + 2) e^u."""
    lams = [0.3, -0.1, -0.45]  # λ_t, then earlier (smaller) λ
    lam_s, rho_t = 0.8, math.exp(-0.3)
    antiderivatives = [
        lambda u: math.exp(u),
        lambda u: (u - 1) * math.exp(u),
        lambda u: (u * u - 2 * u + 2) * math.exp(u),
    ]
    u_t, u_s = -lams[0], -lam_s
    for k in (1, 2, 3):
        w = deis_weights(lams[:k], lam_s, rho_t)
        for degree in range(k):
            got = sum(w_j * (-lam) ** degree for w_j, lam in zip(w, lams, strict=False))
            exact = antiderivatives[degree](u_s) - antiderivatives[degree](u_t)
            assert got == pytest.approx(exact, rel=1e-12, abs=1e-14)


def test_small_steps_keep_the_weights_accurate():
    """h = 1e-6: the φ series keeps the weights exact where a power basis in u would cancel."""
    lams, lam_s = [1.0, 1.0 - 1e-6, 1.0 - 2e-6], 1.0 + 1e-6
    w = deis_weights(lams, lam_s, math.exp(-1.0))
    assert sum(w) == pytest.approx(math.exp(-lam_s) - math.exp(-1.0), rel=1e-9)
    # AB3 weights for equal steps: (23, −16, 5)/12 of the step
    assert np.allclose(np.array(w) / sum(w), [23 / 12, -16 / 12, 5 / 12], atol=1e-5)


def test_order_one_is_ddim():
    assert_first_order_is_ddim(DEIS(7, T_MIN, LogSNRGrid(), order=1), T_MIN)


@pytest.fixture(scope="module")
def flow():
    """A 4-mode ring (std 0.5) under the VP SDE, 8 x_T, and its exact PF-ODE end at T_MIN."""
    sde = VPSDE()
    mixture = ring_mixture(num_modes=4, std=0.5)
    x_T = sde.prior_sample((8, 2), torch.Generator().manual_seed(0), dtype=F64)
    return sde, mixture, x_T, mixture_flow(mixture, sde, x_T, T_MIN, rtol=1e-11, atol=1e-11)[0]


@pytest.mark.parametrize("order,steps", [(1, [16, 32, 64]), (2, [32, 64, 128]), (3, [32, 64, 128])])
def test_convergence_order_on_the_mixture_flow(flow, order, steps):
    """Log–log slope of max|x̂ − x| at t_min against steps lies within 0.25 of k (λ-uniform)."""
    sde, mixture, x_T, exact = flow
    errs = []
    for n in steps:
        solver = DEIS(n, T_MIN, LogSNRGrid(), order=order, lower_order_final=False)
        errs.append((solver(sde, mixture.score_fn(sde), x_T).x0 - exact).abs().max().item())
    measured = -float(np.polyfit(np.log(steps), np.log(errs), 1)[0])
    assert abs(measured - order) < 0.25, (measured, errs)


def _chain():
    return DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [8, 20])
def test_matches_diffusers_deis_on_the_same_grid(order, steps):
    """Every state equals diffusers' DEISMultistepScheduler stepping in float64 on our trailing
    grid to 1e-10 relative (its lower_order_final acts below 15 steps; ours on request)."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import scheduler_on_grid  # noqa: PLC0415

    sde = _chain()
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    solver = DEIS(steps, grid=TrailingGrid(), order=order, lower_order_final=steps < 15)
    ours = solver(sde, score, x_T, record=True)
    sched = diffusers.DEISMultistepScheduler(
        beta_schedule="linear", timestep_spacing="trailing", solver_order=order
    )
    theirs = scheduler_on_grid(sched, sde, score, x_T, solver.time_grid(sde))
    assert ours.nfe == steps == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()


def test_matches_diffusers_deis_pipeline_in_float32():
    """diffusers' own loop (float32 ᾱ and σ): every state within 1e-5 relative of ours."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import DiffusersSampler  # noqa: PLC0415

    sde = _chain()
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    ours = DEIS(8, grid=TrailingGrid(), order=3)(sde, score, x_T, record=True)
    sched = diffusers.DEISMultistepScheduler(
        beta_schedule="linear", timestep_spacing="trailing", solver_order=3
    )
    theirs = DiffusersSampler(sched, 8, ends_at_zero=False)(sde, score, x_T, record=True)
    for a, b in zip(ours.trajectory, theirs.trajectory, strict=True):
        assert (a - b.double()).abs().max() <= 1e-5 * b.abs().max()
