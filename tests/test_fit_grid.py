"""Fitted step schedules (LD3, Tong et al. 2024; Xue et al. 2024): the fit lowers the end-point
error on its pilot x_T and on held-out x_T, the grid reproduces the fitted run exactly, survives a
YAML round trip and a config, and its misuse is a named error."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from sde_gen.data import ring_mixture
from sde_gen.fit_grid import report_lines, run_fit
from sde_gen.metrics.mixtures import mixture_flow
from sde_gen.models import MLP, ScoreModel
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DDIM, PFODE, DPMSolver, FittedGrid, UniPC, fit_grid
from sde_gen.solvers.fit_grid import end_time, pf_ode_teacher, rms_error, starting_grids
from sde_gen.solvers.fit_objectives import validation_split

SDE = DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
MIX = ring_mixture()
SCORE = MIX.score_fn(SDE)


def _x_T(n: int, seed: int) -> torch.Tensor:
    return SDE.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mixture_teacher(solver):
    t_end = end_time(solver, SDE)
    return lambda x: mixture_flow(MIX, SDE, x, t_end, rtol=1e-9, atol=1e-9)[0]


@pytest.fixture(scope="module")
def fitted() -> tuple[DPMSolver, FittedGrid]:
    solver = DPMSolver(steps=6)
    grid = fit_grid(
        solver,
        SDE,
        SCORE,
        _x_T(64, 0),
        x_held_out=_x_T(64, 1),
        teacher=_mixture_teacher(solver),
        maxiter=80,
    )
    return solver, grid


def test_fit_lowers_pilot_and_held_out_error(fitted):
    """The search starts from the best fixed grid, so it can only improve the pilot error; it must
    also improve on x_T it never saw (a fit that wins only on its pilot is a failure)."""
    _, grid = fitted
    info = grid.info
    assert info["pilot_error"] < 0.5 * info["start_pilot_error"] <= 0.5 * info["own_pilot_error"]
    assert info["held_out_error"] < 0.5 * info["start_held_out_error"]
    assert len(starting_grids()) >= 5  # the config group's grids
    assert info["solver_runs"] <= 80 + len(starting_grids())  # the budget and the starting grids
    assert info["solver_nfe"] == 6 * info["solver_runs"]  # pilot runs, one NFE a step
    assert info["seconds"] > 0 and info["steps"] == 6 and info["pilot_n"] == 64


def test_grid_passed_back_reproduces_the_fitted_run_exactly(fitted):
    """On the fit part of the pilot (the teacher solved once for the whole pilot)."""
    solver, grid = fitted
    x_T = _x_T(64, 0)
    fit_idx, _ = validation_split(64, 0.3, 0)
    assert grid.info["chosen"] == "fitted" and grid.info["n_fit"] == len(fit_idx)
    x0 = DPMSolver(steps=6, grid=grid)(SDE, SCORE, x_T[fit_idx]).x0
    assert rms_error(x0, _mixture_teacher(solver)(x_T)[fit_idx]) == grid.info["pilot_error"]
    times = DPMSolver(steps=6, grid=grid).time_grid(SDE)
    assert times[1:-1].tolist() == grid.knots[1:-1] and times[-1] == 0.0  # final_step=zero


def test_yaml_round_trip_and_config_group(fitted, tmp_path):
    _, grid = fitted
    path = grid.save(tmp_path / "grid.yaml")
    loaded = FittedGrid.load(path)
    assert (
        loaded.knots == grid.knots and loaded.info["held_out_error"] == grid.info["held_out_error"]
    )
    x_T = _x_T(16, 2)
    a = DPMSolver(steps=6, grid=grid)(SDE, SCORE, x_T).x0
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[
                "solver=dpm_solver",
                "solver.steps=6",
                "solver/grid=fitted",
                f"solver.grid.path={path}",
            ],
        )
    b = instantiate(cfg.solver)(SDE, SCORE, x_T).x0
    assert torch.equal(a, b)


def test_misuse_is_a_named_error(fitted, tmp_path):
    _, grid = fitted
    with pytest.raises(ValueError, match="steps=6"):
        DPMSolver(steps=8, grid=grid)(SDE, SCORE, _x_T(4, 0))
    with pytest.raises(ValueError, match="T=2.0"):
        DDIM(steps=6, grid=grid)(VPSDE(T=2.0), SCORE, _x_T(4, 0))
    with pytest.raises(ValueError, match="path="):
        FittedGrid.load(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="decreasing"):
        FittedGrid([1.0, 0.5, 0.7])
    with pytest.raises(ValueError, match="maxiter"):
        fit_grid(DPMSolver(steps=4), SDE, SCORE, _x_T(4, 0), maxiter=0)
    with pytest.raises(ValueError, match="method"):
        fit_grid(DPMSolver(steps=4), SDE, SCORE, _x_T(4, 0), method="BFGS")
    with pytest.raises(ValueError, match="steps"):
        fit_grid(DPMSolver(steps=1), SDE, SCORE, _x_T(4, 0))
    with pytest.raises(ValueError, match="fixed-step"):
        fit_grid(PFODE(), SDE, SCORE, _x_T(4, 0))


def test_default_teacher_is_the_pf_ode_to_the_solvers_end_time():
    """Ending on x̂0 (final_step=zero) the teacher stands at σ̃ = 1e-5 for t = 0; with
    final_step=t_min it stops at t_min. Both agree with the exact mixture flow."""
    x_T = _x_T(4, 3)
    for solver in (UniPC(steps=4), UniPC(steps=4, final_step="t_min")):
        t_end = end_time(solver, SDE)
        assert (t_end < 1e-6) == solver.ends_at_zero
        x = pf_ode_teacher(solver, SDE, SCORE)(x_T)
        exact = mixture_flow(MIX, SDE, x_T, t_end, rtol=1e-9, atol=1e-9)[0]
        assert rms_error(x, exact) < 1e-5


def test_network_score_and_powell():
    """Any score: an (untrained) float32 network; Powell instead of Nelder–Mead."""
    torch.manual_seed(0)
    net = ScoreModel(MLP((2,), hidden=16, num_layers=1), SDE).requires_grad_(False)
    x_T = _x_T(16, 4).float()
    grid = fit_grid(
        DDIM(steps=4), SDE, net, x_T, x_held_out=_x_T(16, 5).float(), maxiter=30, method="Powell"
    )
    assert grid.info["pilot_error"] <= grid.info["start_pilot_error"]
    assert math.isfinite(grid.info["held_out_error"]) and grid.info["teacher_nfe"] > 0


def test_cli_writes_grid_and_summary(tmp_path):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose(
            "fit_grid",
            overrides=["data=ring", "solver=unipc", "solver.steps=5", "n=32", "maxiter=20"],
        )
    summary = run_fit(cfg, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert FittedGrid.load(tmp_path / "grid.yaml").knots == summary["times"] == saved["times"]
    assert saved["held_out_seed"] == 1 and saved["teacher_nfe"] > 0
    assert saved["pilot_error"] <= saved["start_pilot_error"]
    assert "held-out" in report_lines(summary)[2]
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        bad = compose("fit_grid", overrides=["solver=pf_ode", "n=4"])
    with pytest.raises(ValueError, match="fixed-step"):
        run_fit(bad, tmp_path)
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        bad = compose("fit_grid", overrides=["method=BFGS"])
    with pytest.raises(ValueError, match="method"):
        run_fit(bad, tmp_path)
