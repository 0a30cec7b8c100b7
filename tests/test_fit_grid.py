"""Fitted step schedules (LD3, Tong et al. 2024; Xue et al. 2024): the fit lowers the end-point
error on its pilot x_T and on held-out x_T, the grid reproduces the fitted run exactly, survives a
YAML round trip and a config, and its misuse is a named error."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from sde_gen.data import GaussianMixture, ring_mixture
from sde_gen.fit_grid import report_lines, run_fit
from sde_gen.metrics.mixtures import mixture_flow
from sde_gen.models import MLP, ScoreModel
from sde_gen.runtime.instantiate import group_objects
from sde_gen.sde import VPSDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import DDIM, PFODE, DPMSolver, FittedGrid, UniPC, fit_grid
from sde_gen.solvers.fit_grid import (
    end_time,
    named_starting_grids,
    pf_ode_teacher,
    rms_error,
    starting_grids,
)
from sde_gen.solvers.fit_objectives import (
    RMS,
    LogMean,
    Trimmed,
    squared_errors,
    validation_split,
)

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


# -- validation: the fit is kept only where it beats the best fixed grid out of sample -----------
MIX2D = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2]),
    torch.tensor([[-1.5, 0.0], [1.0, 1.0], [1.0, -1.2]], dtype=torch.float64),
    torch.tensor([[0.4, 0.2], [0.1, 0.1], [0.05, 0.3]], dtype=torch.float64),
)


def test_fit_that_helps_is_kept_with_validation_below_the_best_fixed_grid(fitted):
    """Ring: the fit beats every fixed grid on the held-out part of the pilot, by more than 2×."""
    _, grid = fitted
    info = grid.info
    assert info["chosen"] == "fitted" and info["n_fit"] + info["n_validation"] == 64
    assert info["n_validation"] == round(0.3 * 64) and info["objective"] == "RMS()"
    assert info["validation_error"] < 0.5 * info["best_fixed_validation_error"]
    assert info["best_fixed_validation_error"] == min(info["fixed_validation_errors"].values())
    assert grid.knots == info["fitted_times"]


def test_overfitted_fit_returns_the_best_fixed_grid_exactly(caplog):
    """mixture2d, 16 pilot x_T (11 fitted, 5 held out): the fit learns its 11 by heart (pilot
    error 0.08, validation 0.56); the best fixed grid on validation, trailing, is returned: its
    times exactly, hence its end points exactly, and the log says so."""
    solver = DPMSolver(steps=5)
    score = MIX2D.score_fn(SDE)
    t_end = end_time(solver, SDE)
    x_T = SDE.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="sde_gen.solvers.fit_grid"):
        grid = fit_grid(
            solver,
            SDE,
            score,
            x_T,
            teacher=lambda x: mixture_flow(MIX2D, SDE, x, t_end, rtol=1e-9, atol=1e-9)[0],
            maxiter=40,
        )
    info = grid.info
    best = info["best_fixed"]
    assert info["chosen"] == best == "trailing" and (info["n_fit"], info["n_validation"]) == (11, 5)
    assert info["pilot_error"] < info["validation_error"] / 4  # the overfit
    assert info["best_fixed_validation_error"] <= info["validation_error"]
    fixed = named_starting_grids()[best]
    assert grid.knots == fixed(SDE, 5, solver.t_min).tolist()
    a = DPMSolver(steps=5, grid=grid)(SDE, score, x_T).x0
    assert torch.equal(a, DPMSolver(steps=5, grid=fixed)(SDE, score, x_T).x0)
    assert f"returning the fixed grid {best}" in caplog.text


def test_objectives_equal_their_closed_forms():
    """Per-sample errors e = 1, 2, 3, 4, 10 (e² = 1, 4, 9, 16, 100)."""
    sq = torch.tensor([16.0, 1.0, 100.0, 4.0, 9.0], dtype=torch.float64)
    assert RMS()(sq) == pytest.approx(math.sqrt(130 / 5), rel=1e-15)
    assert Trimmed(q=0.2)(sq) == pytest.approx(math.sqrt(30 / 4), rel=1e-15)  # drops e = 10
    assert Trimmed(q=0.39)(sq) == Trimmed(q=0.2)(sq)  # ⌊0.39 · 5⌋ = 1 dropped
    assert Trimmed(q=0.4)(sq) == pytest.approx(math.sqrt(14 / 3), rel=1e-15)
    assert Trimmed(q=0.0)(sq) == RMS()(sq)
    assert LogMean()(sq) == pytest.approx(240 ** (1 / 5), rel=1e-14)
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert squared_errors(x, torch.zeros(2, 2)).tolist() == [0.0, 25.0]
    assert RMS()(squared_errors(x, torch.zeros(2, 2))) == rms_error(x, torch.zeros(2, 2))
    diverged = squared_errors(torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]), torch.zeros(2, 2))
    assert RMS()(diverged) == math.inf and Trimmed(q=0.5)(diverged) == 1.0
    with pytest.raises(ValueError, match="objective.q=1"):
        Trimmed(q=1.0)


def test_validation_split_is_deterministic_disjoint_and_complete():
    fit, val = validation_split(100, 0.3, 7)
    again = validation_split(100, 0.3, 7)
    assert torch.equal(fit, again[0]) and torch.equal(val, again[1])
    assert (len(fit), len(val)) == (70, 30)
    assert set(fit.tolist()).isdisjoint(val.tolist())
    assert sorted(fit.tolist() + val.tolist()) == list(range(100))
    assert not torch.equal(val, validation_split(100, 0.3, 8)[1])
    assert len(validation_split(10, 0.0, 0)[0]) == 10
    with pytest.raises(ValueError, match="validation=1"):
        validation_split(10, 1.0, 0)
    with pytest.raises(ValueError, match="n=4"):
        validation_split(4, 0.3, 0)


def test_a_robust_objective_is_what_the_search_minimises():
    """objective=Trimmed: ``objective_value`` is the trimmed RMS of the returned fit on its fit
    part, recomputed here; the validation and pilot errors stay plain RMS."""
    solver = DPMSolver(steps=4)
    x_T = _x_T(40, 5)
    teacher = _mixture_teacher(solver)
    grid = fit_grid(
        solver, SDE, SCORE, x_T, teacher=teacher, maxiter=20, objective=Trimmed(q=0.1), seed=3
    )
    info = grid.info
    assert info["objective"] == "Trimmed(q=0.1)" and info["chosen"] == "fitted"
    fit_idx, val_idx = validation_split(40, 0.3, 3)
    ref = teacher(x_T)
    sq_fit = squared_errors(
        DPMSolver(steps=4, grid=grid)(SDE, SCORE, x_T[fit_idx]).x0, ref[fit_idx]
    )
    assert info["objective_value"] == Trimmed(q=0.1)(sq_fit) and info["pilot_error"] == RMS()(
        sq_fit
    )
    x0_val = DPMSolver(steps=4, grid=grid)(SDE, SCORE, x_T[val_idx]).x0
    assert info["validation_error"] == rms_error(x0_val, ref[val_idx])


def test_cli_validation_and_objective(tmp_path):
    """validation= and objective= reach the fit; the log lines show fit part → validation part
    and the choice; a validation fraction outside [0, 1) and an unknown q are named errors."""
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose(
            "fit_grid",
            overrides=[
                "data=ring",
                "solver=unipc",
                "solver.steps=4",
                "n=20",
                "maxiter=10",
                "validation=0.25",
                "objective=trimmed",
                "objective.q=0.1",
            ],
        )
    s = run_fit(cfg, tmp_path)
    assert (s["n_fit"], s["n_validation"], s["objective"]) == (15, 5, "Trimmed(q=0.1)")
    assert s["chosen"] in ("fitted", *named_starting_grids())
    line = report_lines(s)[1]
    assert f"chosen: {s['chosen']}" in line and f"{s['validation_error']:.4g}" in line
    for bad, match in (("validation=1.0", "validation"), ("objective.q=1.5", "q=1.5")):
        with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
            wrong = compose("fit_grid", overrides=["n=20", "objective=trimmed", bad])
        with pytest.raises(ValueError, match=match):
            run_fit(wrong, tmp_path / "bad")


def test_without_validation_every_pilot_x_T_is_fitted_and_the_fit_kept():
    """validation=0: the old fit (no held-out part); its pilot error is on all the pilot x_T."""
    solver = DPMSolver(steps=4)
    x_T = _x_T(24, 6)
    grid = fit_grid(
        solver, SDE, SCORE, x_T, teacher=_mixture_teacher(solver), maxiter=10, validation=0
    )
    info = grid.info
    assert (info["n_fit"], info["n_validation"], info["chosen"]) == (24, 0, "fitted")
    x0 = DPMSolver(steps=4, grid=grid)(SDE, SCORE, x_T).x0
    assert rms_error(x0, _mixture_teacher(solver)(x_T)) == info["pilot_error"]
    assert (
        "validation_error" not in info
        and "chosen: fitted"
        in report_lines(
            {
                **info,
                "held_out_n": 0,
                "held_out_seed": 1,
                "held_out_error": 0.0,
                "fitted_held_out_error": 0.0,
                "start_held_out_error": 0.0,
                "own_held_out_error": 0.0,
                "grid_file": "g",
                "nfe_total": 0,
                "seconds": 0.0,
            }
        )[1]
    )


def test_every_objective_option_is_the_error_itself_where_all_samples_agree():
    """Each option of the config group ``objective`` builds; on equal per-sample errors e_i = 0.3
    every objective is 0.3 (its scale is that of the RMS)."""
    options = group_objects("objective")
    assert set(options) == {"rms", "trimmed", "log"}
    sq = torch.full((40,), 0.09, dtype=torch.float64)
    for name, objective in options.items():
        assert objective(sq) == pytest.approx(0.3, rel=1e-14), name
