"""Solver × NFE budget × data on exact-score Gaussian mixtures, or on a trained network.

One Hydra job = one (solver, NFE budget, data, sde). It samples from a fixed x_T, scores the
samples against an exact reference set and writes ``summary.json``; the shared pieces of a
(data, sde) pair (x_T, the reference set, the kernel bandwidths, the Monte Carlo floors and the
tight PF-ODE reference end points, at t_min and at t ≈ 0 for solvers whose last step lands on
x̂0) are computed once and cached under ``out_dir/cache``. With ``checkpoint=<step_*.pt>`` the
score is a trained network and the reference its own PF-ODE at a tight tolerance
(``network_reference``): the ODE end-point error is the only metric. With ``fit=true`` a
fixed-step solver first fits its grid (``sde_gen.solvers.fit_grid``) on pilot x_T drawn with
another seed (``fit_seed``, null: seed + 1000), holding out ``fit_validation`` of them to choose
between the fit and the best fixed grid, then is evaluated on the job's x_T (held out; the row
also carries the job's error of that best fixed grid and of the best fixed grid on the job's own
x_T, ``fixed_oracle_*``); the fit is cached by its settings, so
a rerun on more held-out x_T (``n_network``, solved ``network_reference.chunk`` at a time) reuses
both the fit and the reference chunks it has.
At the end of a multirun the ``CollectResults`` callback writes the CSV, the Markdown table and the
plot to ``out_dir`` (with the rows of the ``collect_from`` folders; with ``seed=0,1`` the report
also picks each side on seed 0 and reports it on seed 1: ``solver_selection.py``). The command is
in docs/results.md.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from caching import is_current, stamp
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from network_reference import (  # experiments/ on sys.path
    load_model_network,
    load_network,
    reference_chunks,
    reference_set,
)
from omegaconf import DictConfig, OmegaConf
from solver_selection import SAMPLES_KEY  # a row's per-x_T errors (not a CSV column)

import sde_gen
from sde_gen.data.gaussian_mixture import GaussianMixture
from sde_gen.metrics.mixtures import (
    endpoint_error,
    median_bandwidth,
    mixture_flow,
    mmd2_unbiased,
    monte_carlo_floor,
    nll_gap,
)
from sde_gen.runtime.files import SUMMARY_FILE, atomic_write, write_summary
from sde_gen.sde import SDE
from sde_gen.solvers import FittedGrid, FixedStepSolver, fit_grid
from sde_gen.solvers.first_eval import FirstEval
from sde_gen.solvers.fit_grid import ZERO_SIGMA_TILDE, named_starting_grids
from sde_gen.solvers.pndm import PNDM, Start
from sde_gen.solvers.unipc import Variant

CALIBRATION_STEPS = (4, 8)
SHARED_SETTINGS = ("data", "sde", "n", "n_high_dim", "seed", "bandwidth_scales", "floor_seeds",
                   "reference")  # fmt: skip
"""The settings ``shared_setup``'s cache is keyed by (with t_min and the versions)."""
SAMPLES_FILE = "endpoint_errors.npy"  # ... beside its summary.json


# -- shared per (data, sde) --------------------------------------------------------------------
def shared_setup(cfg: DictConfig, mixture: GaussianMixture, sde: SDE, key: str) -> dict[str, Any]:
    """x_T, reference samples, bandwidths, Monte Carlo floors and ODE reference end points;
    cached under ``key``, reused only under the same settings and versions (``caching``)."""
    path = Path(cfg.out_dir) / "cache" / f"{key}.pt"
    node = OmegaConf.masked_copy(cfg, list(SHARED_SETTINGS))
    settings = OmegaConf.to_container(node, resolve=True) | {"t_min": cfg.solver_overrides.t_min}
    if path.exists() and is_current(shared := torch.load(path, weights_only=False), settings, path):
        return shared
    n = cfg.n if mixture.dim <= 2 else cfg.n_high_dim
    g = torch.Generator().manual_seed(cfg.seed)
    reference = mixture.sample64(n, g)
    x_T = sde.prior_sample((n, mixture.dim), g, dtype=torch.float64)
    h = median_bandwidth(reference)
    bandwidths = [h * s for s in cfg.bandwidth_scales]
    seeds = range(cfg.floor_seeds)
    floors = {
        "mmd2": monte_carlo_floor(
            lambda a, b: mmd2_unbiased(a, b, bandwidths), mixture.sample64, n, seeds=seeds
        ),
        "nll_gap": monte_carlo_floor(
            lambda a, b: nll_gap(mixture, a, b), mixture.sample64, n, seeds=seeds
        ),
    }
    t0 = time.perf_counter()
    ref_x0, ref_nfe = mixture_flow(mixture, sde, x_T, cfg.solver_overrides.t_min, **cfg.reference)
    ref_zero = mixture_flow(mixture, sde, x_T, zero_time(sde), **cfg.reference)[0]
    shared = {
        "n": n,
        "reference": reference,
        "x_T": x_T,
        "bandwidths": bandwidths,
        "floors": {k: vars(v) for k, v in floors.items()},
        "ode_reference": ref_x0,
        "ode_reference_nfe": ref_nfe,
        "ode_reference_zero": ref_zero,
        "flow": flow_metrics(mixture, ref_x0, reference, bandwidths),
        "ode_reference_seconds": time.perf_counter() - t0,
        "stamp": stamp(settings),
    }
    atomic_write(path, lambda tmp: torch.save(shared, tmp))
    return shared


def zero_time(sde: SDE) -> float:
    """The time where σ̃ = σ/γ = ``ZERO_SIGMA_TILDE``: the reference end point standing in for
    t = 0 (the flow moves x by O(σ̃²) after it)."""
    lam = torch.tensor([-2 * math.log(ZERO_SIGMA_TILDE)], dtype=torch.float64)
    return float(sde.t_from_log_snr(lam)[0])


def flow_metrics(
    mixture: GaussianMixture, x: torch.Tensor, reference: torch.Tensor, bandwidths: list[float]
) -> dict[str, float]:
    """MMD² and NLL gap of the exact PF-ODE end points: the limit of every ODE solver from this
    x_T (one draw of the Monte Carlo noise, shared by all ODE solvers)."""
    return {
        "mmd2": mmd2_unbiased(x, reference, bandwidths),
        "nll_gap": nll_gap(mixture, x, reference),
    }


# -- one job -------------------------------------------------------------------------------------
def build_solver(cfg: DictConfig, sde: SDE, score_fn, x_probe: torch.Tensor):
    """The solver spending about ``cfg.nfe`` score evaluations; returns (solver, setting).

    Adaptive solvers (``solver.adaptive``): rtol = atol = ``adaptive_tolerance[nfe]``, set on
    each of ``tolerance_keys`` the config has.
    Fixed-step ones: NFE(steps) = a + b·steps, from ``expected_nfe()`` where the solver declares
    it (else measured on two probe runs: the diffusers peers), inverted for the most steps whose
    NFE is within the budget (DPM-2's 2·steps − 1 spends 9 of 10; at least one step). The steps
    live in ``steps`` or, for a fixed-step ODE backend, in ``backend.steps``.
    """
    scfg = OmegaConf.create(OmegaConf.to_container(cfg.solver, resolve=True))
    for key, value in cfg.solver_overrides.items():
        if key in scfg:
            scfg[key] = value
    if getattr(hydra.utils.instantiate(scfg), "adaptive", False):
        tol = float(cfg.adaptive_tolerance[cfg.nfe])
        keys = [k for k in cfg.tolerance_keys if OmegaConf.select(scfg, k) is not None]
        if not keys:
            raise ValueError(f"adaptive solver config has none of {list(cfg.tolerance_keys)}")
        for key in keys:
            OmegaConf.update(scfg, key, tol)
        return hydra.utils.instantiate(scfg), {"rtol": tol}
    steps_key = "steps" if "steps" in scfg else "backend.steps"
    if OmegaConf.select(scfg, steps_key) is None:
        raise ValueError(f"fixed-step solver config {scfg.get('_target_')} has no steps option")

    def with_steps(steps: int):
        node = scfg.copy()
        OmegaConf.update(node, steps_key, steps)
        return hydra.utils.instantiate(node)

    def nfe(steps: int) -> int:
        solver = with_steps(steps)
        expected = solver.expected_nfe() if hasattr(solver, "expected_nfe") else None
        return expected if expected is not None else solver(sde, score_fn, x_probe).nfe

    lo, hi = CALIBRATION_STEPS
    nfe_lo, nfe_hi = nfe(lo), nfe(hi)
    per_step = (nfe_hi - nfe_lo) / (hi - lo)
    offset = nfe_lo - per_step * lo
    steps = max(1, math.floor((cfg.nfe - offset) / per_step + 1e-9))  # the most within budget
    return with_steps(steps), {"steps": steps, "nfe_per_step": per_step}


#: PNDM's samplers named by how their ε̂ history starts (conf/solver/pndm, plms, ipndm)
PNDM_NAMES = {Start.RUNGE_KUTTA: "PNDM", Start.HEUN: "PLMS", Start.EULER: "iPNDM"}


def family(solver: Any) -> str:
    """The row family: diffusers' scheduler and order, or our class and its order as configured
    (UniPC's variant where it is not the default bh2; PNDM by its start: PNDM, PLMS, iPNDM;
    "+m_T" with ``first_eval='prior_mean'``)."""
    if hasattr(solver, "family"):
        return f"diffusers {solver.family()}"
    attribute = getattr(solver, "option_attributes", {}).get("order", "order")
    order = getattr(solver, "predictor_order", getattr(solver, attribute, None))
    name = type(solver).__name__
    if isinstance(solver, PNDM):
        name = PNDM_NAMES[solver.start]
    if getattr(solver, "variant", Variant.BH2) != Variant.BH2:  # UniPC-bh1-2; bh2 is the default
        name += f"-{solver.variant.value}"
    name = f"{name}-{order:g}" if order else name
    start = getattr(solver, "first_eval", FirstEval.MODEL) is FirstEval.PRIOR_MEAN
    return f"{name}+m_T" if start else name


@dataclass
class Problem:
    """What a job is measured on: the SDE and score, the held-out x_T, the reference end points
    per end (``t_min``, ``zero``: σ̃ = 1e-5 for t = 0), ``pilot(end)`` → (pilot x_T, teacher) for
    fits, the exact mixture (None for a trained network) and the columns every row carries."""

    data: str
    sde_name: str
    sde: SDE
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x_T: torch.Tensor
    references: dict[str, torch.Tensor]
    pilot: Callable[[str], tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]
    columns: dict[str, Any]
    mixture: GaussianMixture | None = None
    shared: dict[str, Any] | None = None


def mixture_problem(cfg: DictConfig, names: dict[str, str]) -> Problem:
    """An exact-score Gaussian mixture (``cfg.data``) diffused by ``cfg.sde``; the reference is
    its exact flow (``mixture_flow``), pilot teachers too."""
    mixture = hydra.utils.instantiate(cfg.data)
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(
            f"data={names['data']} has no exact density; use a Gaussian mixture or give "
            "checkpoint=<step_*.pt> of a trained network"
        )
    sde = hydra.utils.instantiate(cfg.sde)
    key = f"{names['sde']}_{names['data']}_n{cfg.n}_{cfg.n_high_dim}_s{cfg.seed}_v2"
    shared = shared_setup(cfg, mixture, sde, key)
    ends = {"t_min": float(cfg.solver_overrides.t_min), "zero": zero_time(sde)}

    def pilot(end: str):
        g = torch.Generator().manual_seed(pilot_seed(cfg))
        x_pilot = sde.prior_sample((cfg.fit_n, mixture.dim), g, dtype=torch.float64)

        def teacher(x: torch.Tensor) -> torch.Tensor:
            x0, nfe = mixture_flow(mixture, sde, x, ends[end], **cfg.reference)
            teacher.nfe += nfe
            return x0

        teacher.nfe = 0
        return x_pilot, teacher

    columns = {f"{m}_exact_flow": v for m, v in shared["flow"].items()}
    for metric, floor in shared["floors"].items():
        for stat in ("mean", "std", "rms"):
            columns[f"{metric}_floor_{stat}"] = floor[stat]
    columns.update(n=shared["n"], dim=mixture.dim, reference_nfe=shared["ode_reference_nfe"])
    refs = {"t_min": shared["ode_reference"], "zero": shared["ode_reference_zero"]}
    return Problem(
        names["data"],
        names["sde"],
        sde,
        mixture.score_fn(sde),
        shared["x_T"],
        refs,
        pilot,
        columns,
        mixture,
        shared,
    )


def network_problem(cfg: DictConfig) -> Problem:
    """A trained network (``cfg.checkpoint``, or a saved diffusers model: ``model=diffusers
    model.path=<folder>``) with its own PF-ODE as the reference
    (``network_reference``): held-out x_T (seed) and pilot x_T (seed + 1000, teacher at
    ``pilot_rtol``), cached."""
    if cfg.get("model") is not None:
        net = load_model_network(cfg.model)
        ckpt = Path(cfg.model.path).resolve()
        files = sorted(ckpt.rglob("*.safetensors"))
        stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = f"{ckpt}:{stamp}:{OmegaConf.to_yaml(cfg.model)}"
    else:
        net = load_network(cfg.checkpoint, bool(cfg.ema))
        ckpt = Path(cfg.checkpoint).resolve()
        key = f"{ckpt}:{ckpt.stat().st_size}:{cfg.ema}"
    sde, ref = net.sde, cfg.network_reference
    t_min, t_zero = float(cfg.solver_overrides.t_min), zero_time(sde)
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    tols = f"{ref.method}_{ref.rtol:g}_{ref.atol:g}_t{t_min:g}"
    cache = Path(cfg.out_dir) / "cache"

    def draw(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sde.prior_sample((n, *net.shape), g, dtype=torch.float64)

    opts = {"t_min": t_min, "t_zero": t_zero, "method": ref.method, "rtol": ref.rtol}

    def held_cache(start: int, size: int) -> Path:
        offset = f"_o{start}" if start else ""
        return cache / f"net_{tag}_n{size}_s{cfg.seed}{offset}_{tols}.pt"

    held = reference_chunks(
        held_cache,
        net,
        draw(cfg.n_network, cfg.seed),
        ref.chunk or cfg.n_network,
        atol=ref.atol,
        check_rtol=ref.check_rtol,
        **opts,
    )

    def pilot(end: str):
        seed, rtol = pilot_seed(cfg), ref.pilot_rtol or ref.rtol
        atol = ref.atol * rtol / ref.rtol
        path = (
            cache / f"net_{tag}_n{cfg.fit_n}_s{seed}_{ref.method}_{rtol:g}_{atol:g}_t{t_min:g}.pt"
        )
        ps = reference_set(path, net, draw(cfg.fit_n, seed), **{**opts, "rtol": rtol, "atol": atol})

        def teacher(x: torch.Tensor) -> torch.Tensor:
            if x.shape != ps["x_T"].shape or not torch.equal(x, ps["x_T"]):
                raise ValueError("the cached pilot teacher answers only for its pilot x_T")
            return ps["ends"][end]

        teacher.nfe = ps["reference_nfe"]
        return ps["x_T"], teacher

    columns = {
        "n": int(held["x_T"].shape[0]),
        "dim": math.prod(net.shape),
        "checkpoint": str(ckpt),
        "reference_nfe": held["reference_nfe"],
        "reference_tol": held["reference_tol"],
        "reference_seconds": held["reference_seconds"],
        "chunk": ref.chunk,
    }
    if "reference_error" in held:
        columns["check_tol"] = held["check_tol"]
        columns.update({f"reference_error_{e}": v for e, v in held["reference_error"].items()})
    return Problem(
        net.name, repr(sde), sde, net.score_fn, held["x_T"], held["ends"], pilot, columns
    )


def fit_on_pilot(cfg: DictConfig, solver, problem: Problem, end: str) -> dict[str, Any]:
    """Fit ``solver``'s grid on ``cfg.fit_n`` pilot x_T (``pilot_seed``) against the problem's
    teacher to ``end``, holding out ``fit_validation`` of them: the grid set on the solver is the
    fit where it beats the best fixed grid there, else that fixed grid (``fit_choice``). Loaded
    from ``fit_cache`` where present (``fit_cached``: the cost is the first search's)."""
    path = fit_cache(cfg, solver, problem, end)
    cached = path.exists()
    if cached:
        fitted = FittedGrid.load(path)
    else:
        x_pilot, teacher = problem.pilot(end)
        fitted = fit_grid(
            solver,
            problem.sde,
            problem.score_fn,
            x_pilot,
            teacher=teacher,
            maxiter=cfg.fit_maxiter,
            validation=cfg.fit_validation,
            objective=hydra.utils.instantiate(cfg.fit_objective),
            seed=pilot_seed(cfg),
        )
        atomic_write(path, fitted.save)
    solver.grid = fitted
    info = fitted.info
    keys = ("pilot_error", "start_grid", "start_pilot_error", "solver_runs", "nfe_total", "seconds")
    keys += ("validation_error", "best_fixed", "best_fixed_validation_error", "n_fit")
    keys += ("n_validation", "objective", "objective_value")
    row = {f"fit_{k}": info.get(k) for k in keys} | {"fit_times": fitted.knots, "fit_n": cfg.fit_n}
    row |= {"fit_choice": info.get("chosen", "fitted"), "fit_pilot_seed": pilot_seed(cfg)}
    return row | {"fit_cached": cached}


def fixed_grid_errors(
    solver: FixedStepSolver, problem: Problem, end: str, best: str | None
) -> dict[str, Any]:
    """The job's own end-point error of the fit's best fixed grid (picked on validation) and of
    the best fixed grid picked on the job's x_T themselves (an oracle, for comparison)."""
    errors = {}
    for name, grid in named_starting_grids().items():
        run = copy.copy(solver)
        run.grid = grid
        try:
            errors[name] = endpoint_error(
                run(problem.sde, problem.score_fn, problem.x_T).x0, problem.references[end]
            )
        except ValueError:
            continue
    oracle = min(errors, key=errors.__getitem__)
    return {
        "fit_best_fixed_endpoint_error": errors.get(best) if best else None,
        "fixed_oracle_grid": oracle,
        "fixed_oracle_endpoint_error": errors[oracle],
    }


def pilot_seed(cfg: DictConfig) -> int:
    """The pilot x_T's seed: ``fit_seed``, or null: ``seed`` + 1000."""
    return int(cfg.seed + 1000 if cfg.fit_seed is None else cfg.fit_seed)


def fit_cache(cfg: DictConfig, solver: FixedStepSolver, problem: Problem, end: str) -> Path:
    """Where a fit is cached: keyed by the problem (data, SDE, checkpoint file), the solver with
    its starting grid, the end, the pilot (fit_n, its seed), the teachers' tolerances, maxiter,
    the validation fraction, the objective and the package version, so that the same fit
    evaluated on more held-out x_T (or on another job seed with the same ``fit_seed``) is not
    searched again."""
    ckpt = problem.columns.get("checkpoint")
    stamp = Path(ckpt).stat() if ckpt else None
    ref = cfg.network_reference  # the pilot teacher's own settings, not the held-out chunking
    teacher = [ref.method, ref.rtol, ref.atol, ref.pilot_rtol] if ckpt else cfg.reference
    teachers = OmegaConf.to_yaml(OmegaConf.create({"teacher": teacher}))
    objective = OmegaConf.to_yaml(cfg.fit_objective)
    key = (
        f"{problem.data}:{problem.sde_name}:{ckpt}:{stamp and (stamp.st_size, stamp.st_mtime_ns)}:"
        f"{solver!r}:{end}:{cfg.fit_n}:{pilot_seed(cfg)}:{cfg.fit_maxiter}:{teachers}:"
        f"{cfg.fit_validation}:{objective}:{sde_gen.__version__}"
    )
    return Path(cfg.out_dir) / "cache" / f"fit_{hashlib.sha1(key.encode()).hexdigest()[:12]}.yaml"


def write_job(directory: Path, row: dict[str, Any]) -> None:
    """A job's summary.json and, beside it, its per-x_T errors (``SAMPLES_FILE``), each atomic."""
    row = dict(row)
    samples = row.pop(SAMPLES_KEY, None)
    if samples is not None:

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, samples)

        atomic_write(directory / SAMPLES_FILE, write)
    write_summary(directory, row)


def endpoint_errors(x0: torch.Tensor, x_ref: torch.Tensor, chunk: int | None) -> dict[str, Any]:
    """The RMS end-point error, with ``chunk`` < n also per chunk of the held-out x_T (their
    spread shows how stable an RMS over ``chunk`` x_T is), and each x_T's own error under
    ``SAMPLES_KEY`` (written beside the summary: the report pairs two rows' x_T by it)."""
    errors: dict[str, Any] = {"endpoint_error": endpoint_error(x0, x_ref)}
    errors[SAMPLES_KEY] = (x0 - x_ref).flatten(1).norm(dim=1).numpy()
    if chunk and len(x0) > chunk:
        parts = zip(x0.split(chunk), x_ref.split(chunk), strict=True)
        errors["endpoint_error_chunks"] = [endpoint_error(a, b) for a, b in parts]
    return errors


def run_job(cfg: DictConfig) -> dict[str, Any]:
    choices = HydraConfig.get().runtime.choices
    names = {"solver": choices["solver"], "data": choices["data"], "sde": choices["sde"]}
    network = cfg.checkpoint or cfg.get("model") is not None
    problem = network_problem(cfg) if network else mixture_problem(cfg, names)
    row: dict[str, Any] = {
        "solver": names["solver"],
        "data": problem.data,
        "sde": problem.sde_name,
        "nfe_budget": int(cfg.nfe),
        "grid": choices.get("solver/grid"),
        "seed": int(cfg.seed),
    }
    sde, score_fn, x_T = problem.sde, problem.score_fn, problem.x_T
    try:
        solver, setting = build_solver(cfg, sde, score_fn, x_T[:2])
    except (ImportError, InstantiationException, ValueError) as e:
        return {**row, "status": "skipped", "reason": f"{type(e).__name__}: {e}"[:300]}
    row.update(setting)
    row["family"], row["fitted"] = family(solver), bool(cfg.fit)
    row["ends_at_zero"] = bool(getattr(solver, "ends_at_zero", False))
    end = "zero" if row["ends_at_zero"] else "t_min"
    if cfg.fit:
        if not isinstance(solver, FixedStepSolver):
            return {**row, "status": "skipped", "reason": "fit=true needs a fixed-step solver"}
        row.update(fit_on_pilot(cfg, solver, problem, end), grid="fitted")
        if names["solver"] in cfg.ode_solvers:
            row.update(fixed_grid_errors(solver, problem, end, row["fit_best_fixed"]))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    t0 = time.perf_counter()
    result = solver(sde, score_fn, x_T, generator=g)
    row["seconds"] = time.perf_counter() - t0
    x0 = result.x0.to(torch.float64)
    row["nfe"] = int(result.nfe)
    row["finite"] = bool(torch.isfinite(x0).all())
    if row["finite"]:
        if problem.mixture is not None:
            shared = problem.shared
            row["mmd2"] = mmd2_unbiased(x0, shared["reference"], shared["bandwidths"])
            row["nll_gap"] = nll_gap(problem.mixture, x0, shared["reference"])
        if names["solver"] in cfg.ode_solvers:
            row.update(endpoint_errors(x0, problem.references[end], problem.columns.get("chunk")))
    row.update(problem.columns)
    row["status"] = "ok"
    return row


@hydra.main(version_base="1.3", config_path="conf", config_name="solver_comparison")
def main(cfg: DictConfig) -> None:
    if cfg.collect_only:
        collect(Path(cfg.out_dir) / "sweep", Path(cfg.out_dir), [Path(d) for d in cfg.collect_from])
        return
    torch.set_num_threads(1)
    row = run_job(cfg)
    write_job(Path(HydraConfig.get().runtime.output_dir), row)
    shown = {k: row.get(k) for k in ("solver", "data", "nfe", "mmd2", "nll_gap", "status")}
    print(json.dumps(shown))


# -- collection -----------------------------------------------------------------------------------
class CollectResults(Callback):
    """Hydra callback: build the CSV, table and plot when the multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        extra = [Path(d) for d in config.collect_from]
        collect(Path(config.hydra.sweep.dir), Path(config.out_dir), extra)


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """Every summary.json below ``folder``; a row without ``seed`` takes it from its job's
    ``.hydra/config.yaml`` (rows written before the seed was recorded)."""
    rows = []
    for path in sorted(folder.rglob(SUMMARY_FILE)):
        row = json.loads(path.read_text())
        if (path.parent / SAMPLES_FILE).exists():
            row[SAMPLES_KEY] = np.load(path.parent / SAMPLES_FILE)
        job_config = path.parent / ".hydra" / "config.yaml"
        if "seed" not in row and job_config.exists():
            row["seed"] = int(OmegaConf.load(job_config).seed)
        rows.append(row)
    return rows


def collect(sweep_dir: Path, out_dir: Path, extra: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Gather every summary.json below ``sweep_dir`` and the ``extra`` result folders (e.g.
    fitted jobs run elsewhere) into CSV, Markdown and PNG in ``out_dir``."""
    from solver_comparison_report import write_report  # noqa: PLC0415 (experiments/ on sys.path)

    for folder in extra:
        if not folder.is_dir():
            raise ValueError(f"collect_from: {folder} is not a folder")
    rows = [r for folder in (sweep_dir, *extra) for r in read_rows(folder)]
    if not rows:
        raise ValueError(f"no {SUMMARY_FILE} files below {sweep_dir}")
    keys = sorted({k for r in rows for k in r} - {SAMPLES_KEY})
    out_dir.mkdir(parents=True, exist_ok=True)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out_dir / "solver_comparison.csv", write_csv)
    write_report(rows, out_dir)
    return rows


if __name__ == "__main__":
    main()
