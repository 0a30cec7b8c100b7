"""Error-controlled solvers against k-diffusion's ``sample_dpm_adaptive`` on exact-score mixtures.

Both integrate the probability-flow ODE of an exact Gaussian mixture diffused by ``sde`` from the
same x_T (drawn as ``solver_comparison.py`` draws them: seed 0, after the reference set) to t → 0;
each end point is compared with the exact flow at σ̃ = 1e-5 (``mixture_flow``, DOP853 at 1e-8),
the RMS end-point error. Ours (``solver=adaptive`` or ``adaptive_dpm`` with rtol = atol = tol) run
from T to t_min then take their free step to t = 0; k-diffusion's DPM-Solver-23 runs on
x̃ = x/γ from σ̃_T to σ̃ = 1e-5 with the exact denoiser D(x̃, σ̃) = x̃ + σ̃² ∇log p(x̃; σ̃), its
evaluations counted by the denoiser. k-diffusion is optional: pass its folder with ``--kdiffusion``
(only ``k_diffusion.sampling`` is imported); without it its rows are skipped.

The table gives, at each of k-diffusion's tolerances, our evaluations at its error, interpolated
log-log along our error-vs-evaluations curve (NFE_ours(err_k); "—" outside our curve).

Run from the repository root:
  python experiments/adaptive_vs_kdiffusion.py --data ring mixture64 --kdiffusion /path/to/kd
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from sde_gen.data import GaussianMixture, random_mixture, ring_mixture
from sde_gen.metrics.mixtures import endpoint_error, mixture_flow
from sde_gen.sde import SDE, DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import AdaptiveDPM, AdaptiveUniPC
from sde_gen.solvers.fit_grid import ZERO_SIGMA_TILDE

TOLERANCES = (1e-1, 3e-2, 1e-2, 1e-3, 1e-4, 1e-5)
EXTENSION = (1e-6, 1e-7)  # ours only: our curve reaches below k-diffusion's tightest error
KD_DEFAULT = "k-diffusion default (rtol 0.05, atol 0.0078)"
DATA: dict[str, Callable[[], GaussianMixture]] = {  # the configs data=ring, mixture2d, mixture64
    "ring": lambda: ring_mixture(8, 2.0, 0.15),
    "mixture2d": lambda: GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2]),
        torch.tensor([[-1.5, 0.0], [1.0, 1.0], [1.0, -1.2]]),
        torch.tensor([[0.4, 0.2], [0.1, 0.1], [0.05, 0.3]]),
    ),
    "mixture64": lambda: random_mixture(4, 64, 1.0, 0),
}
SOLVERS = {"adaptive": AdaptiveUniPC, "adaptive_dpm": AdaptiveDPM}


def problem(data: str, seed: int = 0) -> tuple[GaussianMixture, SDE, Tensor, Tensor]:
    """(mixture, sde=ddpm_linear, x_T, exact flow at σ̃ = 1e-5): n = 2000 in 2-D, 1000 above."""
    mixture, sde = DATA[data](), DiscreteVPSDE(linear_betas(1000, 1e-4, 0.02))
    n = 2000 if mixture.dim <= 2 else 1000
    g = torch.Generator().manual_seed(seed)
    mixture.sample64(n, g)  # solver_comparison.py draws its reference set first
    x_T = sde.prior_sample((n, mixture.dim), g, dtype=torch.float64)
    return mixture, sde, x_T, mixture_flow(mixture, sde, x_T, zero_time(sde))[0]


def zero_time(sde: SDE) -> float:
    """The t with σ̃ = ZERO_SIGMA_TILDE standing in for t = 0."""
    lam = torch.tensor([-2 * math.log(ZERO_SIGMA_TILDE)], dtype=torch.float64)
    return float(sde.t_from_log_snr(lam)[0])


def denoiser(mixture: GaussianMixture, count: list[int]) -> Callable[[Tensor, Tensor], Tensor]:
    """k-diffusion's model(x̃, σ̃) = D = x̃ + σ̃² ∇log p(x̃; σ̃), p(·; σ̃) = Σ w_k N(μ_k, s_k² + σ̃²)."""
    log_w, means, var0 = mixture.weights.log(), mixture.means, mixture.stds**2

    def model(y: Tensor, sigma: Tensor) -> Tensor:
        count[0] += 1
        s2 = sigma[:, None] ** 2
        var = var0 + s2[:, None]
        diff = y[:, None, :] - means
        log_p = log_w - 0.5 * (diff**2 / var).sum(-1) - 0.5 * var.log().sum(-1)
        score = -(torch.softmax(log_p, 1)[..., None] * diff / var).sum(1)
        return y + s2 * score

    return model


def run_ours(name: str, mixture, sde, x_T, ref, tol: float, **options) -> dict[str, float]:
    solver = SOLVERS[name](rtol=tol, atol=tol, **options)
    res = solver(sde, mixture.score_fn(sde), x_T)
    return {"tol": tol, "nfe": res.nfe, "error": endpoint_error(res.x0, ref)}


def run_kdiffusion(sampling, mixture, sde, x_T, ref, tol: float | None) -> dict[str, float]:
    ends = torch.tensor([sde.T, zero_time(sde)], dtype=torch.float64)
    gamma, sigma = sde.gamma(ends), sde.sigma(ends)
    count = [0]
    kw = {} if tol is None else {"rtol": tol, "atol": tol}
    y, info = sampling.sample_dpm_adaptive(
        denoiser(mixture, count),
        x_T / gamma[0],
        float(sigma[1] / gamma[1]),
        float(sigma[0] / gamma[0]),
        disable=True,
        return_info=True,
        **kw,
    )
    if count[0] != info["nfe"]:
        raise RuntimeError(
            f"k-diffusion counted {info['nfe']} evaluations, the denoiser {count[0]}"
        )
    return {"tol": tol, "nfe": count[0], "error": endpoint_error(gamma[1] * y, ref)}


def nfe_at_error(curve: list[dict[str, float]], error: float) -> float | None:
    """Our evaluations at ``error``, log-log interpolated between the neighbouring points of our
    curve sorted by evaluations (the first crossing); None outside it."""
    pts = sorted((r["nfe"], r["error"]) for r in curve)
    for (n0, e0), (n1, e1) in zip(pts, pts[1:], strict=False):
        if min(e0, e1) <= error <= max(e0, e1) and e0 != e1:
            w = math.log(error / e0) / math.log(e1 / e0)
            return math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
    if pts and pts[0][1] <= error:
        return float(pts[0][0])
    return None


def load_kdiffusion(folder: str | None):
    """``k_diffusion.sampling`` from ``folder`` (or the path), else None with a message."""
    if folder:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError as err:
        print(f"k-diffusion not found ({err}): its rows are skipped", file=sys.stderr)
        return None


def table(data: str, ours: list[dict], kd: list[dict]) -> str:
    lines = [
        f"| {data}: tol | ours NFE | ours RMS error | k-diffusion NFE | k-diffusion error "
        "| ours NFE at k-diffusion's error |",
        "|---|---|---|---|---|---|",
    ]
    by_tol = {r["tol"]: r for r in kd}
    for r in ours:
        k = by_tol.get(r["tol"])
        cells = ["—", "—", "—"]
        if k is not None:
            at = nfe_at_error(ours, k["error"])
            cells = [str(k["nfe"]), f"{k['error']:.2e}", "—" if at is None else f"{at:.0f}"]
        lines.append(
            f"| {r['tol']:g} | {r['nfe']} | {r['error']:.2e} | " + " | ".join(cells) + " |"
        )
    for k in kd:
        if k["tol"] is None:
            at = nfe_at_error(ours, k["error"])
            lines.append(
                f"| {KD_DEFAULT} | | | {k['nfe']} | {k['error']:.2e} | "
                + ("—" if at is None else f"{at:.0f}")
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["ring"], choices=sorted(DATA))
    parser.add_argument("--solver", default="adaptive", choices=sorted(SOLVERS))
    parser.add_argument("--tolerances", type=float, nargs="+", default=list(TOLERANCES))
    parser.add_argument(
        "--extension", type=float, nargs="*", default=list(EXTENSION), help="ours only"
    )
    parser.add_argument("--kdiffusion", default=None, help="folder holding k_diffusion/")
    parser.add_argument(
        "--options", default="{}", help="JSON of solver options, e.g. '{\"h_max\": 1}'"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    sampling = load_kdiffusion(args.kdiffusion)
    options = json.loads(args.options)
    rows = {}
    for data in args.data:
        t0 = time.perf_counter()
        mixture, sde, x_T, ref = problem(data)
        tolerances = [*args.tolerances, *args.extension]
        ours = [run_ours(args.solver, mixture, sde, x_T, ref, t, **options) for t in tolerances]
        kd = []
        if sampling is not None:
            for tol in [*args.tolerances, None]:
                kd.append(run_kdiffusion(sampling, mixture, sde, x_T, ref, tol))
        rows[data] = {"ours": ours, "kdiffusion": kd}
        print(table(data, ours, kd))
        print(f"({time.perf_counter() - t0:.0f} s)\n", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
