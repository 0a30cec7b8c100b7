"""``sde-gen-sample``: draw samples with any solver from a checkpoint or an exact mixture score.

    sde-gen-sample data=ring solver=pf_ode n=2000 record=true
    sde-gen-sample checkpoint=outputs/train/.../step_00010000.pt solver=dpm_solver solver.steps=20
    sde-gen-sample -m solver=euler_maruyama,pf_ode solver.steps=10,20,50

Writes into the run directory ``samples.npz``, a grid (images) or scatter (2-D) PNG, with
``record=true`` also ``trajectory.npz`` and trajectory plots, and ``summary.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sde_gen.build import bytes_per_sample, instantiate_group
from sde_gen.cli import run_cli, user_errors
from sde_gen.data.gaussian_mixture import GaussianMixture
from sde_gen.runtime import (
    atomic_write,
    check_memory,
    choose_threads,
    pick_device,
    write_summary,
)
from sde_gen.score_source import ScoreSource, data_shape, load_score_source
from sde_gen.settings import SampleConfig, settings_from

log = logging.getLogger(__name__)

METRIC_SAMPLES = 2000
"""At most this many samples enter the O(n²) MMD estimate."""


def build_solver(solver_cfg: DictConfig, progress: bool) -> Any:
    """Instantiate ``cfg.solver`` with ``progress``; an option the solver does not take (e.g.
    ``+solver.steps=10`` on the adaptive PF-ODE) is a ValueError naming the group."""
    return instantiate_group("solver", solver_cfg, progress=progress)


def solver_facts(solver: Any) -> dict[str, Any]:
    """What a solver declares about itself: steps, order, stochastic, evaluations per step."""
    keys = ("steps", "order", "stochastic", "evals_per_step", "adaptive")
    return {k: getattr(solver, k, None) for k in keys}


def exact_metrics(mixture: GaussianMixture, x0: torch.Tensor, seed: int) -> dict[str, float]:
    """NLL of the samples under the exact density, the NLL gap to fresh data, MMD², and each
    metric's Monte Carlo floor: its RMS between two exact sample sets of the same sizes."""
    from sde_gen.metrics import median_bandwidth, mmd2_unbiased, monte_carlo_floor, nll_gap

    x = x0.detach().cpu().to(torch.float64).flatten(1)
    n, m = len(x), min(len(x), METRIC_SAMPLES)
    ref = mixture.sample64(n, torch.Generator().manual_seed(1_000_003 + seed))
    h = median_bandwidth(ref)

    def gap(a: torch.Tensor, b: torch.Tensor) -> float:
        return nll_gap(mixture, a, b)

    def mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
        return mmd2_unbiased(a, b, h)

    return {
        "nll": float(-mixture.log_prob(x).mean()),
        "nll_data": float(-mixture.log_prob(ref).mean()),
        "nll_gap": nll_gap(mixture, x, ref),
        "nll_gap_floor": monte_carlo_floor(gap, mixture.sample64, n).rms,
        "mmd2": mmd2(x[:m], ref[:m]),
        "mmd2_floor": monte_carlo_floor(mmd2, mixture.sample64, m).rms,
        "mmd2_n": m,
    }


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    """np.savez_compressed, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def save_plots(
    src: ScoreSource, out_dir: Path, x0: torch.Tensor, result: Any, summary: dict[str, Any]
) -> list[Path]:
    """Scatter (2-D) or grid (images) of the samples; trajectory plots when recorded. Titles
    name the run (solver, steps, NFE, metrics ± floors) from its ``summary``."""
    from sde_gen import plotting

    def title(head: str) -> str:
        return plotting.run_title(summary, head=head)

    shape, paths = data_shape(src.data), []
    density = plotting.mixture_density(src.data.exact, src.sde) if src.data.exact else None
    if shape == (2,):
        ref = src.data.sample(min(len(x0), 2000), torch.Generator().manual_seed(1))
        paths.append(
            plotting.plot_scatter(
                x0[:2000],
                out_dir / "samples.png",
                log_density=density,
                reference=ref,
                title=title("samples"),
            )
        )
        if result.trajectory is not None:
            paths.append(
                plotting.plot_reverse_trajectories(
                    result.trajectory,
                    result.times,
                    out_dir / "trajectories.png",
                    density,
                    title=title("reverse trajectories"),
                )
            )
    elif len(shape) == 3:
        grid = plotting.plot_image_grid(
            x0[:64].clamp(-1, 1), out_dir / "samples.png", title=title("samples")
        )
        paths.append(grid)
        if result.trajectory is not None:
            traj = result.trajectory.clamp(-1, 1)
            paths.append(
                plotting.plot_denoising_strip(
                    traj, result.times, out_dir / "denoising.png", title=title("denoising")
                )
            )
    return paths


def run_sampling(
    cfg: DictConfig, out_dir: Path, solver_name: str | None = None, data_chosen: bool = True
) -> dict[str, Any]:
    """Sample ``cfg.n`` points, write the files and ``summary.json`` into ``out_dir``."""
    settings: SampleConfig = settings_from(cfg, SampleConfig)
    n, seed = settings.n, settings.seed
    device = pick_device(settings.device)
    if not settings.checkpoint:
        device = torch.device("cpu")  # the exact mixture score is evaluated in float64 on the CPU
    src = load_score_source(cfg, device, data_chosen)
    solver = build_solver(cfg.solver, settings.progress)
    steps = getattr(solver, "steps", None) or 0
    copies = 8 + (steps + 1 if settings.record else 0)  # a recorded trajectory keeps every step
    per = bytes_per_sample(src.model, src.data, src.dtype, device, copies=copies)
    check_memory("n", n, per, device)
    threads = choose_threads(settings.threads, device, src.model)
    generator = torch.Generator(device).manual_seed(seed)
    shape = (n, *data_shape(src.data))
    x_T = src.sde.prior_sample(shape, generator, dtype=src.dtype, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        result = solver(src.sde, src.score_fn, x_T, generator=generator, record=settings.record)
    elapsed = time.perf_counter() - start
    x0 = result.x0.detach().cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_arrays(out_dir / "samples.npz", x0=x0.numpy(), nfe=np.array(result.nfe))
    if result.trajectory is not None:
        save_arrays(
            out_dir / "trajectory.npz",
            times=result.times.cpu().numpy(),
            trajectory=result.trajectory.cpu().numpy(),
        )
    finite = bool(torch.isfinite(x0).all())
    summary: dict[str, Any] = {
        "solver": solver_name or type(solver).__name__,
        "solver_class": type(solver).__name__,
        **solver_facts(solver),
        "nfe": int(result.nfe),
        "time_s": elapsed,
        "n": n,
        "seed": seed,
        "source": src.origin,
        "sde": repr(src.sde),
        "data_shape": list(data_shape(src.data)),
        "finite": finite,
        "threads": threads,
    }
    if settings.checkpoint:
        summary["ema"] = settings.ema
    if finite and src.data.exact is not None:
        summary.update(exact_metrics(src.data.exact, x0, seed))
    if finite and settings.plot:
        save_plots(src, out_dir, x0, result, summary)
    write_summary(out_dir, summary)
    return summary


def summary_line(summary: dict[str, Any], out_dir: Path) -> str:
    """One printed line: solver, steps, NFE, time, and the exact-density metrics when present."""
    parts = [
        f"solver={summary['solver']}",
        f"steps={summary['steps']}",
        f"nfe={summary['nfe']}",
        f"time={summary['time_s']:.2f}s",
        f"n={summary['n']}",
    ]
    parts += [f"{k}={summary[k]:.4g}" for k in ("nll_gap", "mmd2") if k in summary]
    return " ".join(parts) + f" -> {out_dir}"


def _data_chosen(overrides: list[str]) -> bool:
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return any(k == "data" or k.startswith("data.") for k in keys)


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@user_errors
def _main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir).resolve()
    summary = run_sampling(
        cfg,
        out_dir,
        solver_name=hc.runtime.choices.get("solver"),
        data_chosen=_data_chosen(list(hc.overrides.task)),
    )
    log.info(summary_line(summary, out_dir))


def main() -> Any:
    """``sde-gen-sample``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
