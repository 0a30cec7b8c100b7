"""Singlestep DPM-Solver++ (Lu et al. 2022a/b) with its stages on the grid: the stage pattern,
convergence orders on a mixture's exact PF-ODE flow, and state-by-state agreement with diffusers'
DPMSolverSinglestepScheduler on the same grid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from orders import assert_first_order_is_ddim, exact_flow, measured_order

from sde_gen.data import ring_mixture
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DPMSolverSinglestep
from sde_gen.solvers.dpm_singlestep import stage_orders
from sde_gen.solvers.grids import KarrasGrid, LogSNRGrid

F64 = torch.float64
T_MIN = 1e-2
MIXTURE = ring_mixture(num_modes=4, std=0.5)


def test_stage_orders():
    assert stage_orders(7, 3, False, False) == [1, 2, 3, 1, 2, 3, 1]
    assert stage_orders(6, 3, True, False) == [1, 2, 3, 1, 2, 1]
    assert stage_orders(8, 3, True, True) == [1, 2, 3, 1, 2, 3, 1, 1]
    assert stage_orders(6, 2, True, False) == [1, 2, 1, 2, 1, 1]
    assert stage_orders(3, 1, True, True) == [1, 1, 1]


def test_order_one_is_ddim():
    assert_first_order_is_ddim(DPMSolverSinglestep(7, T_MIN, LogSNRGrid(), order=1), T_MIN)


@pytest.fixture(scope="module")
def flow():
    sde = VPSDE()
    return sde, *exact_flow(MIXTURE, sde, T_MIN)


def _slope(flow, grid, order, steps):
    sde, x_T, exact = flow

    def solve(n: int) -> torch.Tensor:
        solver = DPMSolverSinglestep(
            n, T_MIN, grid, order=order, lower_order_final=False, final_step="t_min"
        )
        return solver(sde, MIXTURE.score_fn(sde), x_T).x0

    return measured_order(solve, exact, steps)


@pytest.mark.parametrize(
    "grid,order,steps,tol",
    [
        (LogSNRGrid(), 2, [32, 64, 128], 0.2),
        (LogSNRGrid(), 3, [96, 192, 384], 0.25),
        (KarrasGrid(), 3, [96, 192, 384], 0.3),
    ],
    ids=["logsnr-2", "logsnr-3", "karras-3"],
)
def test_convergence_order(flow, grid, order, steps, tol):
    """The measured order is k within ``tol``: r₂ = 2/3 on the λ-uniform grid, 2/3 + O(h) on
    the Karras grid (a smooth grid keeps the third stage third order)."""
    measured, errs = _slope(flow, grid, order, steps)
    assert abs(measured - order) < tol, (measured, errs)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps,final", [(9, "zero"), (10, "t_min"), (11, "zero")])
def test_matches_diffusers_singlestep_on_the_same_grid(order, steps, final):
    """Every state (stages included) equals diffusers' DPMSolverSinglestepScheduler in float64
    on our λ-uniform grid to 1e-12 relative; its order_list is our ``stage_orders``."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from diffusers_peers import scheduler_on_grid  # noqa: PLC0415

    sde = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    score = ring_mixture(std=0.15).score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    solver = DPMSolverSinglestep(steps, grid=LogSNRGrid(), order=order, final_step=final)
    ours = solver(sde, score, x_T, record=True)
    sched = diffusers.DPMSolverSinglestepScheduler(
        beta_schedule="linear",
        solver_order=order,
        lower_order_final=True,
        final_sigmas_type="zero" if final == "zero" else "sigma_min",
    )
    theirs = scheduler_on_grid(sched, sde, score, x_T, solver.time_grid(sde))
    assert sched.order_list == solver.stages()
    assert ours.nfe == steps == len(theirs) - 1
    for a, b in zip(ours.trajectory, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max()
