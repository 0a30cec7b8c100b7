"""``sde-gen-sample``: draw samples with any solver from a checkpoint or an exact mixture score.

    sde-gen-sample data=ring solver=pf_ode n=2000 record=true
    sde-gen-sample checkpoint=outputs/train/.../step_00010000.pt solver=dpm_solver solver.steps=20
    sde-gen-sample -m solver=euler_maruyama,pf_ode,dpm_solver steps=10,20,50

Writes into the run directory ``samples.npz``, a grid (images) or scatter (2-D) PNG, with
``record=true`` also ``trajectory.npz`` and trajectory plots, and ``summary.json``; on images,
``features=digits`` adds FD and KID against the test split, ``export_png=true`` a ``png/`` folder.

The samples come in chunks of ``batch_size``: chunk c draws x_T and the solver's noise from a
generator seeded by (seed, c) (``runtime.sharding``), so under ``torchrun --nproc_per_node=W``
rank r draws the chunks c ≡ r (mod W) and rank 0 writes exactly the samples of one process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sde_gen.cli.build import bytes_per_sample, with_steps
from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.run import run_in_output_dir
from sde_gen.cli.settings import SampleConfig, settings_from
from sde_gen.data.base import DataSource
from sde_gen.metrics.mixtures import exact_metrics, is_point_mass
from sde_gen.networks.source import ScoreSource, data_shape, load_score_source, names_data
from sde_gen.runtime.distributed import World, gather_objects, init_world
from sde_gen.runtime.files import atomic_write, write_summary
from sde_gen.runtime.instantiate import instantiate_group
from sde_gen.runtime.resources import check_memory, choose_threads, pick_device
from sde_gen.runtime.sharding import map_chunks
from sde_gen.solvers.base import SampleResult

log = logging.getLogger("sde_gen.sample")  # not __main__ under python -m or torchrun -m

KEPT_COPIES = 8
"""Copies of every sample rank 0 holds at once: the gathered chunks, their pickles, the joined
array, the file written, the metrics' copies."""


def build_solver(solver_cfg: DictConfig, progress: bool, steps: int | None = None) -> Any:
    """Instantiate ``cfg.solver`` with ``progress`` and the budget ``steps`` (``with_steps``: a
    fixed-step solver's ``solver.steps``, ignored by adaptive ones); an option the solver does not
    take (e.g. ``+solver.steps=10`` on the adaptive PF-ODE) is a ValueError naming the group."""
    return instantiate_group("solver", with_steps(solver_cfg, steps), progress=progress)


def solver_facts(solver: Any) -> dict[str, Any]:
    """What a solver declares about itself: steps, order, stochastic, evaluations per step."""
    keys = ("steps", "order", "stochastic", "evals_per_step", "adaptive")
    return {k: getattr(solver, k, None) for k in keys}


def image_quality(
    net: torch.nn.Module, features: np.ndarray, data: DataSource, settings: SampleConfig
) -> dict[str, float]:
    """FD and KID ± its standard error of the samples' ``features`` against the data's test
    split on ``net``'s features, and their floor: the same between the first n training images
    and the test split (``sde_gen.metrics.images``)."""
    from sde_gen.metrics.images import feature_vectors, frechet_distance
    from sde_gen.metrics.images import kernel_inception_distance as kid

    device = next(iter(net.parameters()), torch.empty(0)).device
    n, subsets, size = len(features), settings.kid_subsets, settings.kid_subset_size
    test = feature_vectors(net, data.split("test", n).to(device))
    train = feature_vectors(net, data.split("train", n).to(device))
    k, k_se = kid(features, test, subsets, size, settings.seed)
    k_floor, k_floor_se = kid(train, test, subsets, size, settings.seed)
    return {
        "fd": frechet_distance(features, test),
        "kid": k,
        "kid_se": k_se,
        "fd_floor": frechet_distance(train, test),
        "kid_floor": k_floor,
        "kid_floor_se": k_floor_se,
        "quality_n_test": len(test),
        "quality_n_train": len(train),
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
    exact = src.data.exact
    has_density = exact is not None and not is_point_mass(exact)
    density = plotting.mixture_density(exact, src.sde) if has_density else None
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


def calibrate_solver(
    solver: Any, src: ScoreSource, cfg: DictConfig, data_chosen: bool, device: torch.device
) -> dict[str, Any]:
    """A solver that declares ``needs_data`` (Analytic-DPM) estimates its moments once on the
    score source's data (the training set of a checkpoint, exact mixture samples), cached beside
    the checkpoint unless ``solver.cache_dir`` says where; returns its cost and the solver's times
    (which an optimal trajectory chooses from the calibration) for the summary."""
    if not getattr(solver, "needs_data", False):
        return {}
    source, folder = src.origin, None
    if cfg.checkpoint:
        stat = Path(cfg.checkpoint).stat()
        source += f":{stat.st_size}:{stat.st_mtime_ns}:ema={cfg.ema}"
        folder = Path(cfg.checkpoint).parent / "calibration"
    if data_chosen or not cfg.checkpoint:
        source += ":" + OmegaConf.to_yaml(cfg.data, resolve=True)
    found = solver.calibrate(
        src.sde, src.score_fn, src.data.sample, source, folder, src.dtype, device
    )
    log.info(
        "calibration: %d score evaluations, %.2fs (%s)", found.nfe, found.seconds, found.origin
    )
    return {
        "calibration_nfe": found.nfe,
        "calibration_s": found.seconds,
        "calibration": found.origin,
        "grid_times": solver.time_grid(src.sde).tolist(),
    }


def check_outputs(settings: SampleConfig, shape: tuple[int, ...], chunks: int, solver: Any) -> None:
    """Options that need image samples, and a recorded path that chunks can share."""
    images = len(shape) == 3 and shape[0] in (1, 3)
    for key, on in (
        ("features", settings.features is not None),
        ("export_png", settings.export_png),
    ):
        if on and not images:
            raise ValueError(f"{key} needs image samples (C, H, W) with C = 1 or 3, got {shape}")
    if settings.record and chunks > 1 and getattr(solver, "adaptive", False):
        raise ValueError(
            f"record=true with an adaptive solver needs one chunk (each chunk has its own times): "
            f"set batch_size >= n={settings.n}, got batch_size={settings.batch_size}"
        )


def join_chunks(parts: list[dict[str, Any]]) -> tuple[SampleResult, np.ndarray | None]:
    """One SampleResult of the chunks in order (NFE: the most any chunk took) and the joined
    features."""
    x0 = torch.cat([p["x0"] for p in parts])
    nfe = max(int(p["nfe"]) for p in parts)
    times, trajectory = parts[0]["times"], None
    if times is not None:
        trajectory = torch.cat([p["trajectory"] for p in parts], dim=1)
    feats = [p["features"] for p in parts]
    features = None if feats[0] is None else np.concatenate(feats)
    return SampleResult(x0, nfe, times, trajectory), features


def check_sizes(
    settings: SampleConfig, src: ScoreSource, solver: Any, device: torch.device
) -> None:
    """One chunk on ``device`` (with its recorded path) and all n samples kept on the CPU must fit
    in memory; a ValueError naming ``batch_size`` or ``n`` otherwise."""
    n, batch_size = settings.n, settings.batch_size
    steps = getattr(solver, "steps", None) or 0
    path = steps + 1 if settings.record else 0  # a recorded trajectory keeps every step
    per = bytes_per_sample(src.model, src.data, src.dtype, device, copies=8 + path)
    check_memory("batch_size", min(batch_size, n), per, device)
    kept = bytes_per_sample(
        None, src.data, src.dtype, torch.device("cpu"), copies=KEPT_COPIES + path
    )
    check_memory("n", n, kept, torch.device("cpu"))


def build_features(settings: SampleConfig, device: torch.device) -> Any:
    """The feature network of FD and KID (config group ``features``), or None."""
    if settings.features is None:
        return None
    return instantiate_group("features", settings.features).to(device)


def draw_chunks(
    settings: SampleConfig, src: ScoreSource, solver: Any, net: Any, world: World
) -> tuple[list[dict[str, Any]] | None, float]:
    """Each chunk's samples (x0, NFE, path, features) from x_T ~ prior with the chunk's own
    generator (``map_chunks``; None off rank 0), and the seconds it took."""
    shape, device = data_shape(src.data), world.device

    def draw(items: slice, generator: torch.Generator) -> dict[str, Any]:
        count = items.stop - items.start
        x_T = src.sde.prior_sample((count, *shape), generator, dtype=src.dtype, device=device)
        with torch.no_grad():
            result = solver(src.sde, src.score_fn, x_T, generator=generator, record=settings.record)
        features = None
        if net is not None:
            from sde_gen.metrics.images import feature_vectors

            features = feature_vectors(net, result.x0.clamp(-1, 1).to(torch.float32))
        recorded = result.trajectory is not None
        return {
            "x0": result.x0.detach().cpu(),
            "nfe": result.nfe,
            "times": result.times.cpu() if recorded else None,
            "trajectory": result.trajectory.cpu() if recorded else None,
            "features": features,
        }

    start = time.perf_counter()
    n, batch_size, seed = settings.n, settings.batch_size, settings.seed
    parts = map_chunks(draw, n, batch_size, seed, world, settings.progress, desc="chunks")
    return parts, time.perf_counter() - start


def write_arrays(out_dir: Path, result: SampleResult) -> None:
    """``samples.npz`` (x0, nfe) and, when recorded, ``trajectory.npz`` (times, trajectory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_arrays(out_dir / "samples.npz", x0=result.x0.numpy(), nfe=np.array(result.nfe))
    if result.trajectory is not None:
        save_arrays(
            out_dir / "trajectory.npz",
            times=result.times.numpy(),
            trajectory=result.trajectory.numpy(),
        )


def sampling_summary(
    settings: SampleConfig, src: ScoreSource, solver: Any, solver_name: str | None,
    result: SampleResult, world: World, facts: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What was sampled and how: the solver, NFE, sizes, seed, source and ``facts`` (time,
    threads, calibration)."""
    summary: dict[str, Any] = {
        "solver": solver_name or type(solver).__name__,
        "solver_class": type(solver).__name__,
        **solver_facts(solver),
        "nfe": int(result.nfe),
        "time_s": facts.pop("time_s"),
        "n": settings.n,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "world_size": world.size,
        "source": src.origin,
        "sde": repr(src.sde),
        "data_shape": list(data_shape(src.data)),
        "finite": bool(torch.isfinite(result.x0).all()),
        **facts,
    }
    if settings.checkpoint:
        summary["ema"] = settings.ema
    summary.update(src.facts)
    return summary


def report_quality(
    settings: SampleConfig, src: ScoreSource, out_dir: Path, result: SampleResult,
    net: Any, features: np.ndarray | None, summary: dict[str, Any],
) -> None:  # fmt: skip
    """Of finite samples: the exact mixture's metrics, FD/KID, PNGs and plots, as asked."""
    if not summary["finite"]:
        return
    x0 = result.x0
    if src.data.exact is not None:
        summary.update(exact_metrics(src.data.exact, x0, settings.seed))
    if net is not None:
        summary.update(image_quality(net, features, src.data, settings))
    if settings.export_png:
        from sde_gen.metrics.images import export_pngs

        export_pngs(x0, out_dir / "png")
    if settings.plot:
        save_plots(src, out_dir, x0, result, summary)


def run_sampling(
    cfg: DictConfig, out_dir: Path, solver_name: str | None = None, data_chosen: bool = True
) -> dict[str, Any] | None:
    """Sample ``cfg.n`` points, write the files and ``summary.json`` into ``out_dir``; under
    torchrun each rank draws its chunks and rank 0 writes (the others return None)."""
    settings: SampleConfig = settings_from(cfg, SampleConfig)
    pick_device(settings.device)  # a bad name is an error even for an exact score
    # the exact mixture score is evaluated in float64 on the CPU
    world = init_world(
        settings.device if settings.checkpoint or settings.model else "cpu", settings.dist_timeout
    )
    out_dir = Path(gather_objects(str(out_dir))[0])  # the run folder is rank 0's
    src = load_score_source(cfg, world.device, data_chosen)
    chunks = -(-settings.n // settings.batch_size)
    show = settings.progress and world.is_main and chunks == 1
    solver = build_solver(cfg.solver, show, settings.steps)
    check_outputs(settings, data_shape(src.data), chunks, solver)
    check_sizes(settings, src, solver, world.device)
    threads = choose_threads(settings.threads, world.device, src.model)
    calibration = calibrate_solver(solver, src, cfg, data_chosen, world.device)
    net = build_features(settings, world.device)
    parts, elapsed = draw_chunks(settings, src, solver, net, world)
    if parts is None:
        return None
    result, features = join_chunks(parts)
    write_arrays(out_dir, result)
    facts = {"time_s": elapsed, "threads": threads, **calibration}
    summary = sampling_summary(settings, src, solver, solver_name, result, world, facts)
    report_quality(settings, src, out_dir, result, net, features, summary)
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


_data_chosen = names_data  # the name tests and older callers use


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@user_errors
def _main(cfg: DictConfig) -> None:
    def work(hc: Any, out_dir: Path) -> dict[str, Any] | None:
        solver_name = hc.runtime.choices.get("solver")
        data_chosen = names_data(list(hc.overrides.task))
        return run_sampling(cfg, out_dir, solver_name=solver_name, data_chosen=data_chosen)

    run_in_output_dir(work, summary_line, log)


def main() -> Any:
    """``sde-gen-sample``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
