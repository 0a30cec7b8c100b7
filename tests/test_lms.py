"""Linear multistep in ρ = σ/γ (k-diffusion's LMS, the ρAB of Zhang & Chen 2022): exact Lagrange
integrals, convergence order k on a mixture's exact PF-ODE flow, and state-by-state agreement
with diffusers' LMSDiscreteScheduler on the same grid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from orders import assert_first_order_is_ddim, exact_flow, measured_order

from sde_gen.data import ring_mixture
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import LMS
from sde_gen.solvers.grids import LogSNRGrid, TrailingGrid
from sde_gen.solvers.lms import lms_weights

F64 = torch.float64
T_MIN = 1e-2
MIXTURE = ring_mixture(num_modes=4, std=0.5)


def test_weights_integrate_polynomials_in_rho_exactly():
    """Σ_j w_j ρ_j^m = (ρ_s^{m+1} − ρ_t^{m+1})/(m + 1) for m < k, on unequal nodes."""
    rhos, rho_s = [0.9, 1.3, 2.2, 4.0], 0.5
    for k in range(1, 5):
        w = lms_weights(rhos[:k], rho_s)
        for m in range(k):
            got = sum(w_j * rho**m for w_j, rho in zip(w, rhos, strict=False))
            assert got == pytest.approx(
                (rho_s ** (m + 1) - rhos[0] ** (m + 1)) / (m + 1), rel=1e-12
            )


def test_order_one_is_ddim():
    assert_first_order_is_ddim(LMS(7, T_MIN, LogSNRGrid(), order=1), T_MIN)


@pytest.fixture(scope="module")
def flow():
    sde = VPSDE()
    return sde, *exact_flow(MIXTURE, sde, T_MIN)


@pytest.mark.parametrize("order,tol", [(1, 0.1), (2, 0.15), (3, 0.3), (4, 0.35)])
def test_convergence_order_on_the_mixture_flow(flow, order, tol):
    """Variable-step Adams–Bashforth in ρ: the measured order (λ-uniform grid, 64–256 steps)
    is the declared k within ``tol``."""
    sde, x_T, exact = flow
    steps = [64, 128, 256]

    def solve(n: int) -> torch.Tensor:
        lms = LMS(n, T_MIN, LogSNRGrid(), order=order, final_step="t_min")
        return lms(sde, MIXTURE.score_fn(sde), x_T).x0

    measured, errs = measured_order(solve, exact, steps)
    assert abs(measured - order) < tol, (measured, errs)


def _chain_case():
    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    return sde, score, x_T


def _lms_scheduler(diffusers, order: int):
    """diffusers' LMSDiscreteScheduler whose ``step`` uses ``order`` (its default is 4)."""

    class OrderedLMS(diffusers.LMSDiscreteScheduler):
        def step(self, *args, **kwargs):
            return super().step(*args, order=order, **kwargs)

    return OrderedLMS(beta_schedule="linear", timestep_spacing="trailing")


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_diffusers_lms_on_the_same_grid(order):
    """Every state equals diffusers' LMSDiscreteScheduler in float64 on our trailing grid ending
    at σ = 0 to 1e-12 relative (its quad-integrated coefficients are exact for degree ≤ 3)."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import scheduler_on_grid  # noqa: PLC0415

    sde, score, x_T = _chain_case()
    solver = LMS(10, grid=TrailingGrid(), order=order)
    ours = solver(sde, score, x_T, record=True)
    sched = _lms_scheduler(diffusers, order)
    theirs = scheduler_on_grid(sched, sde, score, x_T, solver.time_grid(sde), scaled=True)
    assert ours.nfe == 10 == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()


def test_matches_diffusers_lms_pipeline_in_float32():
    """diffusers' own loop (float32 σ, trailing): the end point is ours within 1e-5 relative."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import DiffusersSampler  # noqa: PLC0415

    sde, score, x_T = _chain_case()
    ours = LMS(10, grid=TrailingGrid())(sde, score, x_T)
    theirs = DiffusersSampler(_lms_scheduler(diffusers, 4), 10)(sde, score, x_T)
    assert theirs.nfe == ours.nfe == 10
    assert (ours.x0 - theirs.x0.double()).abs().max() <= 1e-5 * theirs.x0.abs().max()
