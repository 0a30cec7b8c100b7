"""Ancestral sampling with σ² = β, β̃ and Analytic-DPM's σ*² on the exact-score mixtures.

Arms: β and β̃ on the uniform grid; σ*² on the uniform grid with the paper's Γ̂ = E‖ε_θ‖²/d
(``eps_norm``) and with the residual Γ̂ = 1 − E‖ε − ε_θ‖²/d; σ*² on its optimal trajectory (the
default, ``OptimalTrajectory``), with the paper's last-step cap, and β, β̃ on that same trajectory.
For each data set and number of steps: the NLL gap of the samples (``metrics.nll_gap``, with its
standard error), the ratio of their total variance to the data's, their MMD² to fresh data, and
the summed step KLs of the chain,
Σ_steps E KL(q(x_s | x_t, x0) ‖ N(μ(x_t), σ² I)) in nats (the VLB terms the variance changes,
with D = b² E‖x0 − x̂0‖²/d estimated on fresh draws). Writes a Markdown table to stdout.

The NLL gap's ± covers the samples only: Γ̂ itself is a Monte Carlo estimate (``mc_seed``), and the
default σ*² arm's trajectory and variances move with it. A second table repeats that arm over
``--calibration-seeds`` seeds (same x_T, same sampling noise) and gives the gap's mean ± s.d. and
range across them, beside the mean within-seed s.e.

    python experiments/analytic_dpm_study.py --n 20000 --steps 10 20 50 --calibration-seeds 12
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sde_gen.metrics.mixtures import median_bandwidth, mmd2_unbiased, nll_gap
from sde_gen.sde import VPSDE
from sde_gen.solvers import AnalyticDPM, Ancestral, FittedGrid, UniformGrid

F64 = torch.float64
NAMES = ["ring", "mixture2d"]
PAPER_FINAL_STD = 2 * (2 / 255) * math.sqrt(math.pi / 2)  # Bao et al.'s cap for 8-bit images


def step_kl(mix, sde, times: list[float], variances: list[float], n: int, seed: int) -> float:
    """Σ over the noisy steps of d/2 ((β̃ + D)/σ² − 1 + log(σ²/β̃)), D = b² E‖x0 − x̂0‖²/d."""
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample64(n, g)
    total = 0.0
    for (t, s), var in zip(zip(times[:-2], times[1:-1], strict=True), variances, strict=True):
        tt = torch.full((n,), t, dtype=F64)
        xt = sde.marginal_sample(x0, tt, torch.randn(x0.shape, generator=g, dtype=F64))
        x0_hat = sde.x0_from_score(xt, tt, mix.score(xt, tt, sde))
        _, b, beta_tilde = (float(v) for v in sde.posterior(*(torch.tensor([u]) for u in (s, t))))
        D = b**2 * float((x0 - x0_hat).pow(2).mean())
        total += x0.shape[1] / 2 * ((beta_tilde + D) / var - 1 + math.log(var / beta_tilde))
    return total


def variances(solver, sde) -> list[float]:
    """σ² of each noisy step of ``solver``'s grid."""
    if isinstance(solver, AnalyticDPM):
        out = solver.step_variances(sde).tolist()
        if solver.final_std_max is not None and out:
            out[-1] = min(out[-1], solver.final_std_max**2)
        return out
    times = solver.time_grid(sde)
    s, t = times[1:-1], times[:-2]
    if solver.variance.value == "beta":
        return sde.transition(s, t)[1].tolist()
    return sde.posterior(s, t)[2].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--mc-samples", type=int, default=10000)  # the solver's default
    parser.add_argument(
        "--calibration-seeds", type=int, default=12,
        help="calibration seeds 0..k-1 for the default σ*² arm's spread table (0: none)",
    )  # fmt: skip
    parser.add_argument("--spread-only", action="store_true", help="only the seeds' table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sde = VPSDE()
    if not args.spread_only:
        arms_table(sde, args)
    if args.calibration_seeds > 0:
        spread_table(sde, NAMES, args.steps, args)


def arms_table(sde, args) -> None:
    """Print every arm's row for every data set and number of steps."""
    print(
        "| data | steps | σ² | grid | NLL gap ± SE | var / data | MMD² | Σ step KL | calibration |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in NAMES:
        mix, ref, x_T = problem(sde, name, args.n)
        h = median_bandwidth(ref)
        for steps in args.steps:
            for label, grid, solver in arms(sde, mix, steps, args.mc_samples):
                cost = ""
                if isinstance(solver, AnalyticDPM):
                    start = time.perf_counter()
                    found = solver.calibrate(sde, mix.score_fn(sde), mix.sample64)
                    cost = f"{found.nfe} evals, {time.perf_counter() - start:.1f} s"
                res = solver(sde, mix.score_fn(sde), x_T, torch.Generator().manual_seed(0))
                gap, se = gap_and_se(mix, res.x0, ref)
                kl = step_kl(
                    mix, sde, solver.time_grid(sde).tolist(), variances(solver, sde), args.n, seed=7
                )
                spread = float(res.x0.var(0).sum() / ref.var(0).sum())
                mmd = mmd2_unbiased(res.x0[:4000], ref[:4000], h)
                print(
                    f"| {name} | {steps} | {label} | {grid} | {gap:.3f} ± {se:.3f} | "
                    f"{spread:.3f} | {mmd:.5f} | {kl:.2f} | {cost} |",
                    flush=True,
                )


def gap_and_se(mix, x0: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """NLL gap of ``x0`` against ``ref`` and its s.e. √(Var_gen/n + Var_data/n) over the points."""
    nll, nll_ref = -mix.log_prob(x0), -mix.log_prob(ref)
    se = math.sqrt(float(nll.var()) / len(nll) + float(nll_ref.var()) / len(nll_ref))
    return nll_gap(mix, x0, ref), se


def calibration_spread(
    sde, mix, x_T, ref, steps: int, mc_samples: int, seeds: int, name: str, cache: str
) -> dict:
    """The default σ*² arm's NLL gap with Γ̂ calibrated on seeds 0..``seeds``−1 (same x_T and
    sampling noise): per-seed gaps and s.e.s, their mean, s.d. and range. Γ̂ of data ``name``
    is kept in ``cache`` (one calibration a seed serves every number of steps)."""
    gaps, ses = [], []
    for seed in range(seeds):
        solver = AnalyticDPM(steps=steps, mc_samples=mc_samples, mc_batch=mc_samples, mc_seed=seed)
        solver.calibrate(sde, mix.score_fn(sde), mix.sample64, source=name, default_cache_dir=cache)
        res = solver(sde, mix.score_fn(sde), x_T, torch.Generator().manual_seed(0))
        gap, se = gap_and_se(mix, res.x0, ref)
        gaps.append(gap)
        ses.append(se)
    g = torch.tensor(gaps, dtype=F64)
    stats = {"mean": g.mean(), "sd": g.std(), "min": g.min(), "max": g.max()}
    return {"gaps": gaps, "ses": ses, "mean_se": sum(ses) / len(ses)} | {
        k: float(v) for k, v in stats.items()
    }


def spread_table(sde, names: list[str], steps: list[int], args) -> None:
    """Print the default σ*² arm's NLL gap across calibration seeds for every data set and
    number of steps."""
    print(f"\n**σ*² (default)** across {args.calibration_seeds} calibration seeds (mc_seed "
          f"0–{args.calibration_seeds - 1}, Γ̂ on M = {args.mc_samples} draws each)\n")  # fmt: skip
    print("| data | steps | NLL gap mean ± s.d. over seeds | range | mean within-seed s.e. |")
    print("|---|---|---|---|---|")
    for name in names:
        mix, ref, x_T = problem(sde, name, args.n)
        with tempfile.TemporaryDirectory() as cache:  # this run's calibrations only
            for k in steps:
                s = calibration_spread(
                    sde, mix, x_T, ref, k, args.mc_samples, args.calibration_seeds, name, cache
                )
                print(f"| {name} | {k} | {s['mean']:.3f} ± {s['sd']:.3f} | {s['min']:.3f} – "
                      f"{s['max']:.3f} | {s['mean_se']:.3f} |", flush=True)  # fmt: skip


def problem(sde, name: str, n: int):
    """The mixture ``name``, n reference points (seed 99) and n prior draws x_T (seed 1000)."""
    mix = instantiate(OmegaConf.load(f"sde_gen/conf/data/{name}.yaml"))
    ref = mix.sample64(n, torch.Generator().manual_seed(99))
    x_T = sde.prior_sample((n, 2), torch.Generator().manual_seed(1000), dtype=F64)
    return mix, ref, x_T


def arms(sde, mix, steps: int, mc_samples: int):
    """(σ² label, grid label, solver) of every arm; the trajectory is σ*²'s optimal one."""
    mc = {"mc_samples": mc_samples, "mc_batch": mc_samples}
    optimal = AnalyticDPM(steps=steps, **mc)
    optimal.calibrate(sde, mix.score_fn(sde), mix.sample64)
    trajectory = FittedGrid(optimal.time_grid(sde)[:-1].tolist())
    uniform = UniformGrid()
    return [
        ("β", "uniform", Ancestral(steps=steps)),
        ("β̃", "uniform", Ancestral(steps=steps, variance="beta_tilde")),
        ("σ*², Γ̂ = E‖ε_θ‖²/d (paper)", "uniform", AnalyticDPM(
            steps=steps, grid=uniform, estimator="eps_norm", **mc)),
        ("σ*², residual Γ̂", "uniform", AnalyticDPM(steps=steps, grid=uniform, **mc)),
        ("**σ*² (default)**", "optimal trajectory", AnalyticDPM(steps=steps, **mc)),
        (f"σ*², last σ ≤ {PAPER_FINAL_STD:.4f}", "optimal trajectory", AnalyticDPM(
            steps=steps, final_std_max=PAPER_FINAL_STD, **mc)),
        ("β", "σ*²'s trajectory", Ancestral(steps=steps, grid=trajectory)),
        ("β̃", "σ*²'s trajectory", Ancestral(steps=steps, variance="beta_tilde", grid=trajectory)),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
