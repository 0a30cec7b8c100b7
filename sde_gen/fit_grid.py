"""``sde-gen-fit-grid``: fit a fixed-step solver's time grid to a tight PF-ODE teacher.

    sde-gen-fit-grid data=ring sde=ddpm_linear solver=dpm_solver solver.steps=10 n=256
    sde-gen-fit-grid checkpoint=outputs/train/.../step_00003000.pt solver=unipc solver.steps=10

Writes ``grid.yaml`` (``FittedGrid.save``; use it as ``solver/grid=fitted
solver.grid.path=<file>``) and ``summary.json`` into the run directory, and logs the cost (score
evaluations, seconds), the pilot (fit part) and validation RMS end-point errors of the fitted
grid and of the best fixed grid, which of them was chosen (``validation``: the fraction of the
pilot held out; the fit is kept only where it beats the best fixed grid there), and the held-out
errors of the chosen, fitted, best fixed and own grids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.settings import FitGridConfig, register_fit_grid_config, settings_from
from sde_gen.networks.source import ScoreSource, data_shape, load_score_source
from sde_gen.runtime.files import write_summary
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.runtime.resources import choose_threads, pick_device
from sde_gen.sde.score_fn import ScoreFn
from sde_gen.solvers.base import FixedStepSolver
from sde_gen.solvers.fit_grid import end_time, fit_grid, pf_ode_teacher

log = logging.getLogger("sde_gen.fit_grid")  # not __main__ under python -m or torchrun -m

GRID_FILE = "grid.yaml"


def mixture_teacher(src: ScoreSource, solver: FixedStepSolver, tol: float):
    """x_T ↦ ``metrics.mixtures.mixture_flow`` (the exact mixture's PF-ODE, DOP853 at ``tol``) to
    the solver's end time, then Tweedie's x̂0 where the solver has ``denoise_final``."""
    from sde_gen.metrics.mixtures import mixture_flow

    t_end = end_time(solver, src.sde)

    def teacher(x_T: torch.Tensor) -> torch.Tensor:
        x, nfe = mixture_flow(src.data.exact, src.sde, x_T, t_end, rtol=tol, atol=tol)
        teacher.nfe += nfe
        if solver.denoise_final and not solver.ends_at_zero:
            x = ScoreFn.of(src.score_fn, src.sde).x0(x, solver.t_min)
        return x.to(x_T.dtype)

    teacher.nfe = 0  # read by fit_grid's cost count
    return teacher


def run_fit(cfg: DictConfig, out_dir: Path, data_chosen: bool = True) -> dict[str, Any]:
    """Fit, save ``grid.yaml`` and ``summary.json`` in ``out_dir``; return the summary."""
    settings: FitGridConfig = settings_from(cfg, FitGridConfig)
    network = settings.checkpoint or settings.model is not None
    device = pick_device(settings.device) if network else torch.device("cpu")
    src = load_score_source(cfg, device, data_chosen)
    solver = instantiate_group("solver", cfg.solver, progress=False)
    if not isinstance(solver, FixedStepSolver):
        raise ValueError(f"solver={type(solver).__name__} has no grid: pick a fixed-step solver")
    threads = choose_threads(settings.threads, device, src.model)
    shape = data_shape(src.data)

    def draw(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device).manual_seed(seed)
        return src.sde.prior_sample((n, *shape), g, dtype=src.dtype, device=device)

    x_pilot = draw(settings.n, settings.seed)
    x_held = draw(settings.n_held_out or settings.n, settings.seed + 1)
    tol = settings.teacher_tol
    if src.data.exact is not None and not settings.checkpoint:
        teacher = mixture_teacher(src, solver, tol)
    else:
        teacher = pf_ode_teacher(solver, src.sde, src.score_fn, rtol=tol, atol=tol)
    fitted = fit_grid(
        solver,
        src.sde,
        src.score_fn,
        x_pilot,
        x_held_out=x_held,
        teacher=teacher,
        maxiter=settings.maxiter,
        method=settings.method,
        validation=settings.validation,
        objective=instantiate_group("objective", cfg.objective),
        seed=settings.seed,
    )
    fitted.info.update(source=src.origin, seed=settings.seed, held_out_seed=settings.seed + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = fitted.save(out_dir / GRID_FILE)
    summary = {**fitted.info, "times": fitted.knots, "grid_file": str(path), "threads": threads}
    summary.update(src.facts)
    write_summary(out_dir, summary)
    return summary


def report_lines(summary: dict[str, Any]) -> list[str]:
    """Cost; pilot RMS errors (fit part → validation part) of the fitted, best fixed and own
    grids and the choice; held-out errors; the grid file."""
    s = summary
    lines = [
        f"fitted {s['solver_class']} steps={s['steps']} on {s['n_fit']} of {s['pilot_n']} pilot "
        f"x_T ({s['objective']}): {s['solver_runs']} solver runs, {s['nfe_total']} score "
        f"evaluations (teacher {s['teacher_nfe']}), {s['seconds']:.1f} s"
    ]
    if s.get("n_validation"):
        fixed, val = s["best_fixed"], s["fixed_validation_errors"]
        lines.append(
            f"pilot RMS error, fit part -> validation part (n={s['n_validation']}): fitted "
            f"{s['pilot_error']:.4g} -> {s['validation_error']:.4g} | best fixed {fixed} "
            f"{s['best_fixed_pilot_error']:.4g} -> {s['best_fixed_validation_error']:.4g} | own "
            f"{s['own_grid']} {s['own_pilot_error']:.4g} -> {val[s['own_grid']]:.4g}; "
            f"chosen: {s['chosen']}"
        )
    else:
        lines.append(
            f"pilot RMS error (no validation): fitted {s['pilot_error']:.4g} | best fixed "
            f"{s['start_grid']} {s['start_pilot_error']:.4g} | own {s['own_grid']} "
            f"{s['own_pilot_error']:.4g}; chosen: fitted"
        )
    best = s.get("best_fixed_held_out_error", s["start_held_out_error"])
    return [
        *lines,
        f"held-out RMS error (n={s['held_out_n']}, seed {s['held_out_seed']}): chosen "
        f"{s['held_out_error']:.4g} | fitted {s['fitted_held_out_error']:.4g} | best fixed "
        f"{best:.4g} | own {s['own_held_out_error']:.4g}",
        f"grid: {s['grid_file']} (solver/grid=fitted solver.grid.path=<file>)",
    ]


def _data_chosen(overrides: list[str]) -> bool:
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return any(k == "data" or k.startswith("data.") for k in keys)


@hydra.main(version_base="1.3", config_path="conf", config_name="fit_grid")
@user_errors
def _main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir).resolve()
    summary = run_fit(cfg, out_dir, _data_chosen(list(hc.overrides.task)))
    for line in report_lines(summary):
        log.info(line)


def main() -> Any:
    """``sde-gen-fit-grid``."""
    register_fit_grid_config()
    return run_cli(_main)


if __name__ == "__main__":
    main()
