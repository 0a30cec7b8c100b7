"""Fitted step schedules: the N − 1 interior times of a fixed-step solver chosen to minimise its
RMS end-point error against a tight-tolerance probability-flow ODE teacher on pilot x_T (the idea
of LD3, Tong et al. 2024, and of optimised time steps, Xue et al. 2024).

Parametrisation: the log-SNR λ_i = log(γ²/σ²) of the grid rises from λ(T) to λ(t_min) by N
positive increments Δ_i = (λ(t_min) − λ(T)) softmax(θ)_i, θ_N = 0 (N − 1 free parameters), and
t_i = t(λ_i) (``sde.t_from_log_snr``). The search starts from the best on the pilot set of the
standalone grids of the config group ``solver/grid`` (``starting_grids``) and runs
derivative-free (Nelder–Mead or Powell, ``maxiter`` solver runs), so every evaluation is one
ordinary solver call: the fitted grid, passed back as ``grid=``, reproduces the fitted run
exactly. The result is a ``FittedGrid``, saved to and loaded from YAML.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy.optimize import minimize
from torch import Tensor

from sde_gen.runtime.files import read_regular_text
from sde_gen.runtime.instantiate import group_objects
from sde_gen.sde import SDE
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn
from sde_gen.solvers.base import FixedStepSolver, check_int
from sde_gen.solvers.grids import Grid
from sde_gen.solvers.pf_ode import PFODE, ScaledCoordinates, ScipyODE

__all__ = ["FittedGrid", "fit_grid", "starting_grids", "pf_ode_teacher", "end_time", "rms_error"]

Teacher = Callable[[Tensor], Tensor]

#: σ̃ = σ/γ at which the teacher stands in for t = 0 (the rest of the flow moves x by O(σ̃²))
ZERO_SIGMA_TILDE = 1e-5
METHODS = ("Nelder-Mead", "Powell")
#: the objective where the grid is not strictly decreasing or the run diverges (finite for Powell)
PENALTY = 1e30
#: a grid file holds a few hundred numbers; a larger one is not one ``FittedGrid.save`` wrote
MAX_GRID_BYTES = 2**20
#: edge of Nelder–Mead's first simplex in θ (a log-ratio of log-SNR increments)
SIMPLEX_STEP = 0.3


class FittedGrid(Grid):
    """A grid of given times T = t_0 > t_1 > … > t_N (``times``); ``info`` records how it was
    fitted (solver, steps, sde, pilot and held-out errors, cost). Called for a solver of ``steps``
    = N on an SDE whose T is t_0; the last time becomes the solver's t_min."""

    standalone = False  # fitted for one solver and step count

    def __init__(self, times: Sequence[float], info: dict[str, Any] | None = None):
        values = [float(t) for t in times]
        if len(values) < 2:
            raise ValueError(f"times={values} needs at least 2 entries (T and t_min)")
        if any(not math.isfinite(t) for t in values) or any(
            b >= a for a, b in zip(values, values[1:], strict=False)
        ):
            raise ValueError(f"times={values} must be finite and strictly decreasing")
        if values[-1] < 0:
            raise ValueError(f"times={values} end at {values[-1]} < 0: the last time is t_min ≥ 0")
        self.knots = values
        self.info = dict(info or {})

    @property
    def steps(self) -> int:
        return len(self.knots) - 1

    def __repr__(self) -> str:
        return f"FittedGrid(steps={self.steps}, times={[round(t, 6) for t in self.knots]})"

    def times(self, sde: SDE, u: Tensor, t_min: float) -> Tensor:
        if len(u) != len(self.knots):
            raise ValueError(
                f"the fitted grid has {len(self.knots)} times (steps={self.steps}); the solver "
                f"asks for steps={len(u) - 1}: set solver.steps={self.steps}"
            )
        if abs(self.knots[0] - sde.T) > 1e-12 * max(1.0, abs(sde.T)):
            raise ValueError(
                f"the fitted grid starts at T={self.knots[0]}, the SDE {sde!r} has T={sde.T}"
            )
        if not self.knots[-2] > t_min:
            raise ValueError(f"t_min={t_min} must be below the last interior time {self.knots[-2]}")
        return torch.tensor(self.knots, dtype=torch.float64)

    def save(self, path: str | Path) -> Path:
        """Write ``times`` and ``info`` to a YAML file (floats written exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        node = OmegaConf.create({"times": self.knots, **self.info})
        path.write_text(OmegaConf.to_yaml(node))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FittedGrid:
        """Read a YAML file written by ``save`` (``solver/grid=fitted solver.grid.path=…``): a
        small regular UTF-8 file without anchors or aliases whose ``times`` are numbers; anything
        else is a ValueError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"grid path={str(path)!r} is not a file (write one: sde-gen-fit-grid)")
        data = _plain_yaml(path, read_regular_text(path, "grid file", MAX_GRID_BYTES))
        if not isinstance(data, dict) or not isinstance(data.get("times"), list):
            held = f"a {data}" if isinstance(data, str) else "no 'times' list"
            raise ValueError(f"grid path={str(path)!r} holds {held}, not a list of times")
        for i, t in enumerate(data["times"]):
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ValueError(f"grid file {str(path)!r}: times[{i}]={t!r} is not a number")
        info = {k: v for k, v in data.items() if k != "times"}
        try:
            return cls(data["times"], info)
        except ValueError as e:
            raise ValueError(f"grid file {str(path)!r}: {e}") from None


def _plain_yaml(path: Path, text: str) -> Any:
    """``text`` as containers (a top-level text or list: its kind, "str" or "list"); anchors
    and aliases (an alias bomb expands without bound) are refused, interpolations kept as text,
    a syntax error names ``path``."""
    import yaml

    kinds = {yaml.ScalarEvent: "str", yaml.SequenceStartEvent: "list"}
    try:
        root = None
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(
                    f"grid file {str(path)!r} uses YAML anchors or aliases (&, *): a fitted grid "
                    "is plain numbers (sde-gen-fit-grid writes none)"
                )
            root = root or (type(event) if isinstance(event, yaml.NodeEvent) else None)
        if root in kinds:
            return kinds[root]  # OmegaConf would read a lone string as a key
        return OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except (yaml.YAMLError, ValueError) as e:
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        line = " ".join(str(e).split())[:200]
        raise ValueError(f"grid file {str(path)!r} is not valid YAML: {line}") from None


def starting_grids() -> list[Grid]:
    """The standalone grids of the config group ``solver/grid`` (``Grid.standalone``), each with
    its config's options: a grid added there is a starting grid without any other edit."""
    return [
        g for g in group_objects("solver/grid").values() if isinstance(g, Grid) and g.standalone
    ]


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
    d = (x.to(torch.float64) - x_ref.to(torch.float64)).flatten(1)
    value = float((d**2).sum(1).mean().sqrt())
    return value if math.isfinite(value) else math.inf


def _with_grid(solver: FixedStepSolver, grid: Grid) -> FixedStepSolver:
    out = copy.copy(solver)
    out.grid, out.progress = grid, False
    return out


def _lambda(sde: SDE, t: Sequence[float]) -> np.ndarray:
    return sde.log_snr(torch.tensor(list(t), dtype=torch.float64)).numpy()


class _Objective:
    """θ ↦ RMS end-point error of the solver on the grid θ encodes; counts runs and NFE."""

    def __init__(self, solver, sde, score_fn, x_T, x_ref):
        self.solver, self.sde, self.score_fn, self.x_T, self.x_ref = (
            solver,
            sde,
            score_fn,
            x_T,
            x_ref,
        )
        self.T, self.t_min = sde.T, solver.t_min
        self.lam_T, self.lam_min = (float(v) for v in _lambda(sde, [self.T, self.t_min]))
        self.runs = self.nfe = 0
        self.best: tuple[float, list[float]] = (math.inf, [])

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

    def error(self, grid: Grid) -> float:
        result = _with_grid(self.solver, grid)(self.sde, self.score_fn, self.x_T)
        self.runs += 1
        self.nfe += result.nfe
        return rms_error(result.x0, self.x_ref)

    def __call__(self, theta: np.ndarray) -> float:
        times = self.times_of(theta)
        if times is None:
            return PENALTY
        err = self.error(FittedGrid(times))
        if err < self.best[0]:
            self.best = (err, times)
        return min(err, PENALTY)


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
) -> FittedGrid:
    """The ``solver.steps`` − 1 interior times minimising the RMS end-point error of ``solver`` on
    pilot ``x_T`` against ``teacher(x_T)`` (default ``pf_ode_teacher``: the PF-ODE of the same
    score at rtol = atol = 1e-7 to the solver's end time; a teacher that does not call score_fn
    may report its evaluations in an attribute ``nfe``).

    Starts from the best on the pilot of ``starts`` (default: the solver's own grid and the
    ``starting_grids``); ``maxiter`` bounds the solver runs of the search (``method`` Nelder-Mead |
    Powell). ``x_held_out``: x_T it is not fitted on, where the fitted and the starting grids'
    errors are reported too (``info``: pilot_error, held_out_error, start_*, cost in score
    evaluations and seconds).
    """
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
    start_clock = time.perf_counter()
    counted = ScoreFn(score_fn, sde)
    teach = teacher or pf_ode_teacher(solver, sde, counted)
    x_ref = teach(x_T)
    teacher_nfe = counted.nfe + getattr(teach, "nfe", 0)
    obj = _Objective(solver, sde, counted, x_T, x_ref)
    candidates = _unique([solver.grid, *starting_grids()] if starts is None else list(starts))
    start_errors = {repr(g): _try(obj.error, g) for g in candidates}
    start = min(candidates, key=lambda g: start_errors[repr(g)])
    if not math.isfinite(start_errors[repr(start)]):
        raise ValueError(
            f"no starting grid of {[repr(g) for g in candidates]} gives a finite error"
        )
    start_times = start(sde, solver.steps, solver.t_min).tolist()
    theta0 = obj.theta_of(start_times)
    obj.best = (start_errors[repr(start)], start_times)
    simplex = theta0 + np.vstack([np.zeros(len(theta0)), SIMPLEX_STEP * np.eye(len(theta0))])
    options: dict[str, Any] = {"maxfev": maxiter, "xatol": 1e-4, "fatol": 0.0}
    options["initial_simplex"] = simplex
    if method == "Powell":
        options = {"maxfev": maxiter, "xtol": 1e-4, "ftol": 1e-10}
    minimize(obj, theta0, method=method, options=options)
    pilot_error, times = obj.best
    fitted = FittedGrid(times)
    info: dict[str, Any] = {
        "solver": repr(solver),
        "solver_class": type(solver).__name__,
        "steps": solver.steps,
        "sde": repr(sde),
        "t_min": solver.t_min,
        "method": method,
        "pilot_n": int(x_T.shape[0]),
        "pilot_error": pilot_error,
        "start_grid": repr(start),
        "start_pilot_error": start_errors[repr(start)],
        "own_grid": repr(solver.grid),
        "own_pilot_error": start_errors.get(repr(solver.grid)),
        "solver_runs": obj.runs,
        "teacher_nfe": teacher_nfe,
        "solver_nfe": obj.nfe,
    }
    if x_held_out is not None:
        x_ref_h = teach(x_held_out)
        held = _Objective(solver, sde, counted, x_held_out, x_ref_h)
        info.update(
            held_out_n=int(x_held_out.shape[0]),
            held_out_error=held.error(fitted),
            start_held_out_error=held.error(start),
            own_held_out_error=held.error(solver.grid),
        )
    info["nfe_total"] = counted.nfe + getattr(teach, "nfe", 0)
    info["seconds"] = time.perf_counter() - start_clock
    fitted.info = info
    return fitted


def _try(error: Callable[[Grid], float], grid: Grid) -> float:
    try:
        return error(grid)
    except ValueError:  # a fixed grid this SDE or step count cannot take
        return math.inf


def _unique(grids: list[Grid]) -> list[Grid]:
    seen: dict[str, Grid] = {}
    for g in grids:
        if not isinstance(g, Grid):
            raise ValueError(f"starts entry {g!r} is not a Grid")
        seen.setdefault(repr(g), g)
    return list(seen.values())
