"""Fitted step schedules: the N − 1 interior times of a fixed-step solver chosen to minimise its
RMS end-point error against a tight-tolerance probability-flow ODE teacher on pilot x_T (the idea
of LD3, Tong et al. 2024, and of optimised time steps, Xue et al. 2024).

Parametrisation: the log-SNR λ_i = log(γ²/σ²) of the grid rises from λ(T) to λ(t_min) by N
positive increments Δ_i = (λ(t_min) − λ(T)) softmax(θ)_i, θ_N = 0 (N − 1 free parameters), and
t_i = t(λ_i) (``sde.t_from_log_snr``). The search starts from the best on the fit part of the
pilot of the standalone grids of the config group ``solver/grid`` (``starting_grids``) and runs
derivative-free (Nelder–Mead or Powell, ``maxiter`` solver runs), so every evaluation is one
ordinary solver call: the fitted grid, passed back as ``grid=``, reproduces the fitted run
exactly. A part of the pilot is held out (``fit_objectives.validation_split``): the fit is kept
only where its RMS there beats the best fixed grid's, else that fixed grid is the result (RMS
errors are dominated by a few mode-switching trajectories, which a fit can learn by heart). The
result is a ``FittedGrid``, saved to and loaded from YAML.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from sde_gen.runtime.instantiate import group_objects
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn
from sde_gen.solvers.base import FixedStepSolver, check_int
from sde_gen.solvers.fit_objectives import RMS, squared_errors, validation_split
from sde_gen.solvers.fitted_grid import FittedGrid
from sde_gen.solvers.grids import Grid
from sde_gen.solvers.pf_ode import PFODE, ScaledCoordinates, ScipyODE

__all__ = [
    "FittedGrid",
    "fit_grid",
    "starting_grids",
    "named_starting_grids",
    "pf_ode_teacher",
    "end_time",
    "rms_error",
]

Teacher = Callable[[Tensor], Tensor]
#: squared per-sample errors ↦ one number (``fit_objectives``: RMS, Trimmed, LogMean)
Reduction = Callable[[Tensor], float]

log = logging.getLogger(__name__)

#: σ̃ = σ/γ at which the teacher stands in for t = 0 (the rest of the flow moves x by O(σ̃²))
ZERO_SIGMA_TILDE = 1e-5
METHODS = ("Nelder-Mead", "Powell")
#: the objective where the grid is not strictly decreasing or the run diverges (finite for Powell)
PENALTY = 1e30
#: edge of Nelder–Mead's first simplex in θ (a log-ratio of log-SNR increments)
SIMPLEX_STEP = 0.3


def starting_grids() -> list[Grid]:
    """The standalone grids of the config group ``solver/grid`` (``Grid.standalone``), each with
    its config's options: a grid added there is a starting grid without any other edit."""
    return list(named_starting_grids().values())


def named_starting_grids() -> dict[str, Grid]:
    """``starting_grids`` by their option name in ``solver/grid``."""
    group = group_objects("solver/grid").items()
    return {k: g for k, g in group if isinstance(g, Grid) and g.standalone}


def end_time(solver: FixedStepSolver, sde: SDE) -> float:
    """Where the solver's output lives: t_min, or (last step lands on x̂0) the time where
    σ̃ = ``ZERO_SIGMA_TILDE``, standing in for t = 0."""
    if not solver.ends_at_zero:
        return solver.t_min
    lam = torch.tensor([-2 * math.log(ZERO_SIGMA_TILDE)], dtype=torch.float64)
    t = float(sde.t_from_log_snr(lam)[0])
    return min(max(t, 1e-12), solver.t_min)


def pf_ode_teacher(
    solver: FixedStepSolver,
    sde: SDE,
    score_fn: ScoreCallable,
    rtol: float = 1e-7,
    atol: float = 1e-7,
) -> Teacher:
    """x_T ↦ the PF-ODE end point at the solver's ``end_time`` (DOP853 in the scaled coordinates
    y = x/γ, u = log σ̃ at rtol, atol), then Tweedie's x̂0 where the solver has ``denoise_final``."""
    ode = PFODE(ScipyODE("DOP853", rtol, atol, ScaledCoordinates()), t_min=end_time(solver, sde))

    def teacher(x_T: Tensor) -> Tensor:
        x = ode(sde, score_fn, x_T).x0
        if solver.denoise_final and not solver.ends_at_zero:
            with torch.no_grad():
                x = ScoreFn.of(score_fn, sde).x0(x, solver.t_min)
        return x

    return teacher


def rms_error(x: Tensor, x_ref: Tensor) -> float:
    """√(mean_i ‖x_i − x_ref,i‖²) (``metrics.mixtures.endpoint_error``); inf if x is not finite."""
    return RMS()(squared_errors(x, x_ref))


def _with_grid(solver: FixedStepSolver, grid: Grid) -> FixedStepSolver:
    out = copy.copy(solver)
    out.grid, out.progress = grid, False
    return out


def _lambda(sde: SDE, t: Sequence[float]) -> np.ndarray:
    return sde.log_snr(torch.tensor(list(t), dtype=torch.float64)).numpy()


class _Objective:
    """θ ↦ ``objective`` of the solver's squared end-point errors on the grid θ encodes; counts
    runs and NFE and keeps the best grid with its plain RMS."""

    def __init__(self, solver, sde, score_fn, x_T, x_ref, objective: Reduction | None = None):
        self.solver, self.sde, self.score_fn = solver, sde, score_fn
        self.x_T, self.x_ref, self.objective = x_T, x_ref, objective or RMS()
        self.T, self.t_min = sde.T, solver.t_min
        self.lam_T, self.lam_min = (float(v) for v in _lambda(sde, [self.T, self.t_min]))
        self.runs = self.nfe = 0
        self.best: tuple[float, list[float], float] = (math.inf, [], math.inf)

    def theta_of(self, times: Sequence[float]) -> np.ndarray:
        """θ with softmax(θ, θ_N = 0) = the grid's log-SNR increments (floored at 1e-9)."""
        lam = _lambda(self.sde, [self.T, *times[1:-1], self.t_min])
        inc = np.maximum(np.diff(lam), 1e-9)
        return np.log(inc[:-1]) - np.log(inc[-1])

    def times_of(self, theta: np.ndarray) -> list[float] | None:
        z = np.append(np.asarray(theta, dtype=np.float64), 0.0)
        w = np.exp(z - z.max())
        lam = self.lam_T + (self.lam_min - self.lam_T) * np.cumsum(w / w.sum())[:-1]
        inner = self.sde.t_from_log_snr(torch.as_tensor(lam, dtype=torch.float64)).tolist()
        times = [self.T, *inner, self.t_min]
        if any(b >= a for a, b in zip(times, times[1:], strict=False)):
            return None  # increments below the resolution of t(λ)
        return times

    def squared(self, grid: Grid) -> Tensor:
        result = _with_grid(self.solver, grid)(self.sde, self.score_fn, self.x_T)
        self.runs += 1
        self.nfe += result.nfe
        return squared_errors(result.x0, self.x_ref)

    def error(self, grid: Grid) -> float:
        """The plain RMS end-point error of ``grid``."""
        return RMS()(self.squared(grid))

    def scores(self, grid: Grid) -> tuple[float, float]:
        """(objective, plain RMS) of ``grid``; (inf, inf) for a grid this SDE or N cannot take."""
        try:
            sq = self.squared(grid)
        except ValueError:
            return math.inf, math.inf
        return self.objective(sq), RMS()(sq)

    def __call__(self, theta: np.ndarray) -> float:
        times = self.times_of(theta)
        if times is None:
            return PENALTY
        value, rms = self.scores(FittedGrid(times))
        if value < self.best[0]:
            self.best = (value, times, rms)
        return min(value, PENALTY)


def fit_grid(
    solver: FixedStepSolver,
    sde: SDE,
    score_fn: ScoreCallable,
    x_T: Tensor,
    *,
    x_held_out: Tensor | None = None,
    teacher: Teacher | None = None,
    starts: Sequence[Grid] | None = None,
    maxiter: int = 200,
    method: str = "Nelder-Mead",
    validation: float = 0.3,
    objective: Reduction | None = None,
    seed: int = 0,
) -> FittedGrid:
    """The ``solver.steps`` − 1 interior times minimising ``objective`` (default the RMS) of the
    end-point errors of ``solver`` on the fit part of pilot ``x_T`` against ``teacher(x_T)``
    (default ``pf_ode_teacher``: the PF-ODE of the same score at rtol = atol = 1e-7 to the
    solver's end time; a teacher that does not call score_fn may report its evaluations in an
    attribute ``nfe``), solved once for all pilot x_T.

    ``validation``: the fraction of the pilot held out (``validation_split`` by ``seed``). The
    fitted grid is returned only where its RMS there is below that of the best fixed grid
    (``starts``, default the solver's own grid and the ``starting_grids``); otherwise that fixed
    grid's times are (``info['chosen']`` names it; logged). 0: no validation, the fit returned.
    The search starts from the best of ``starts`` on the fit part; ``maxiter`` bounds its solver
    runs (``method`` Nelder-Mead | Powell). ``x_held_out``: other x_T, never used for a choice,
    where every grid's RMS is reported too. ``info``: errors, the choice, cost (score evaluations,
    seconds).
    """
    _check(solver, maxiter, method)
    fit_idx, val_idx = validation_split(int(x_T.shape[0]), validation, seed)
    start_clock = time.perf_counter()
    counted = ScoreFn(score_fn, sde)
    teach = teacher or pf_ode_teacher(solver, sde, counted)
    x_ref = teach(x_T)
    teacher_nfe = counted.nfe + getattr(teach, "nfe", 0)
    obj = _Objective(solver, sde, counted, x_T[fit_idx], x_ref[fit_idx], objective)
    named = _named_starts([solver.grid] if starts is None else list(starts), starts is None)
    fixed = {name: obj.scores(g) for name, g in named.items()}
    start_name = min(named, key=lambda name: fixed[name][0])
    if not math.isfinite(fixed[start_name][0]):
        raise ValueError(f"no starting grid of {list(named)} gives a finite error")
    start_times = named[start_name](sde, solver.steps, solver.t_min).tolist()
    theta0 = obj.theta_of(start_times)
    obj.best = (fixed[start_name][0], start_times, fixed[start_name][1])
    minimize(obj, theta0, method=method, options=_options(method, maxiter, theta0))
    objective_value, times, pilot_error = obj.best
    fitted = FittedGrid(times)
    own = next((k for k, g in named.items() if repr(g) == repr(solver.grid)), None)
    info: dict[str, Any] = {
        "solver": repr(solver),
        "solver_class": type(solver).__name__,
        "steps": solver.steps,
        "sde": repr(sde),
        "t_min": solver.t_min,
        "method": method,
        "objective": repr(obj.objective),
        "objective_value": objective_value,
        "pilot_n": int(x_T.shape[0]),
        "n_fit": len(fit_idx),
        "n_validation": len(val_idx),
        "validation": validation,
        "split_seed": seed,
        "pilot_error": pilot_error,
        "start_grid": start_name,
        "start_pilot_error": fixed[start_name][1],
        "own_grid": own,
        "own_pilot_error": fixed[own][1] if own else None,
        "fixed_pilot_errors": {k: v[1] for k, v in fixed.items()},
        "fitted_times": fitted.knots,
        "chosen": "fitted",
        "chosen_because": "validation=0: no held-out part of the pilot",
        "solver_runs": obj.runs,
        "teacher_nfe": teacher_nfe,
        "solver_nfe": obj.nfe,
    }
    chosen = fitted
    if len(val_idx):
        val = _Objective(solver, sde, counted, x_T[val_idx], x_ref[val_idx])
        chosen = _choose(val, fitted, named, info, sde, solver)
    if x_held_out is not None:
        x_ref_h = teach(x_held_out)
        held = _Objective(solver, sde, counted, x_held_out, x_ref_h)
        info.update(
            held_out_n=int(x_held_out.shape[0]),
            held_out_error=held.error(chosen),
            fitted_held_out_error=held.error(fitted),
            start_held_out_error=held.error(named[start_name]),
            own_held_out_error=held.error(solver.grid),
        )
        if len(val_idx):
            info["best_fixed_held_out_error"] = held.error(named[info["best_fixed"]])
    info["nfe_total"] = counted.nfe + getattr(teach, "nfe", 0)
    info["seconds"] = time.perf_counter() - start_clock
    chosen.info = info
    return chosen


def _choose(
    val: _Objective,
    fitted: FittedGrid,
    named: dict[str, Grid],
    info: dict[str, Any],
    sde: SDE,
    solver: FixedStepSolver,
) -> FittedGrid:
    """The fitted grid where its validation RMS is below every fixed grid's, else the best fixed
    grid's times; records both errors and the choice in ``info`` and logs it."""
    fixed = {name: val.scores(g)[1] for name, g in named.items()}
    best = min(fixed, key=fixed.__getitem__)
    fitted_error = val.error(fitted)
    info.update(
        validation_error=fitted_error,
        best_fixed=best,
        best_fixed_pilot_error=info["fixed_pilot_errors"][best],
        best_fixed_validation_error=fixed[best],
        fixed_validation_errors=fixed,
        validation_runs=val.runs,
    )
    if fitted_error < fixed[best]:
        info.update(chosen="fitted", chosen_because="below the best fixed grid on validation")
        log.info(
            "fit_grid: the fitted grid (validation RMS %.4g) beats the best fixed grid %s "
            "(%.4g): returning the fitted grid",
            fitted_error,
            best,
            fixed[best],
        )
        return fitted
    why = f"the fitted grid's validation RMS {fitted_error:.4g} >= {best}'s {fixed[best]:.4g}"
    info.update(chosen=best, chosen_because=why)
    log.info("fit_grid: %s: returning the fixed grid %s", why, best)
    return FittedGrid(named[best](sde, solver.steps, solver.t_min).tolist())


def _check(solver: FixedStepSolver, maxiter: int, method: str) -> None:
    if not isinstance(solver, FixedStepSolver):
        raise ValueError(f"solver={solver!r} must be a fixed-step solver (it has a grid)")
    if solver.stochastic:
        raise ValueError(
            f"solver={type(solver).__name__} is stochastic: its end points differ from the "
            "deterministic PF-ODE teacher's by its noise, not by its grid; fit a deterministic "
            "solver (ddim, heun, dpm_solver, unipc)"
        )
    if solver.steps < 2:
        raise ValueError(f"solver.steps={solver.steps} must be >= 2 (no interior time to fit)")
    check_int("maxiter", maxiter, 1)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")


def _options(method: str, maxiter: int, theta0: np.ndarray) -> dict[str, Any]:
    if method == "Powell":
        return {"maxfev": maxiter, "xtol": 1e-4, "ftol": 1e-10}
    simplex = theta0 + np.vstack([np.zeros(len(theta0)), SIMPLEX_STEP * np.eye(len(theta0))])
    return {"maxfev": maxiter, "xatol": 1e-4, "fatol": 0.0, "initial_simplex": simplex}


def _named_starts(grids: list[Grid], with_group: bool) -> dict[str, Grid]:
    """Starting grids by name: the config group's option names (with ``with_group``, its
    standalone grids are added), else each grid's repr; a repeated grid once."""
    group = named_starting_grids()
    names = {repr(g): name for name, g in group.items()}
    out: dict[str, Grid] = {}
    for g in [*grids, *(group.values() if with_group else [])]:
        if not isinstance(g, Grid):
            raise ValueError(f"starts entry {g!r} is not a Grid")
        out.setdefault(names.get(repr(g), repr(g)), g)
    return out
