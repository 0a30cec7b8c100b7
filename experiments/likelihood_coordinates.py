"""PF-ODE log-likelihood in three coordinate systems, with its error split into its sources, on
Gaussian mixtures whose exact log q_t is known at every t.

    python experiments/likelihood_coordinates.py                        # the tables of results.md
    python experiments/likelihood_coordinates.py --data fresh16 --sdes vp --coordinates angle \\
        --methods RK45 DOP853 --tols 1e-5 3e-5 1e-4                     # a tolerance sweep
    python experiments/likelihood_coordinates.py --data fresh16 mixture64 --seeds 7 8 11 12 13 \\
        --sdes vp ve --coordinates angle --priors standard matched     # the two priors

Coordinates: (x, t) as written, (y = x/γ, log σ̃) and (z = x/√(γ² + σ²), φ = arctan σ̃), the
default. Data: ``fresh16`` is ``random_mixture(4, 16, seed)`` with a seed no test uses
(``--seeds``), the others are the shipped configs ``data=mixture64|mixture2d|ring``; SDEs are the
shipped ``sde=vp|subvp|ve|ddpm_linear``. Exact trace; ``--n`` samples of the data per case.
Every component of the ODE state is held to the one tolerance of ``--tols`` (rtol = atol =
logp_atol), as in the tables of docs/results.md; ``likelihood_tolerances.py`` measures the
library's defaults, which give the log density its own.

For each case, from one solve with the prior π (``--priors``: ``standard`` is the SDE's N(0, s² I),
``matched`` the default of ``ode_log_likelihood``, moved to the score's mean at T), ending at x_T:
  total  = mean |log p − log q_{t_min}(x)|, what ``ode_log_likelihood`` claims to compute;
  prior  = mean |log π(x_T) − log q_T(x_T)|, the model's prior mismatch (no integrator removes it);
  solve  = mean |log p − log π(x_T) + log q_T(x_T) − log q_{t_min}(x)|, the integration error
           (what is left with the exact q_T as the prior);
and with ``--budget`` also t_min = mean |log q_{t_min}(x) − log q_0(x)| (the density at t_min
against the data's) and the error of Hutchinson's estimate with one probe against the exact trace.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

import sde_gen
from sde_gen.data import GaussianMixture, random_mixture
from sde_gen.likelihood.ode import GaussianProbe, RademacherProbe, ode_log_likelihood
from sde_gen.likelihood.priors import MatchedPrior, StandardPrior
from sde_gen.sde import SDE
from sde_gen.sde.coordinates import AngleCoordinates, ScaledCoordinates, TimeCoordinates

CONF = Path(sde_gen.__file__).parent / "conf"
COORDINATES = {"t": TimeCoordinates(), "scaled": ScaledCoordinates(), "angle": AngleCoordinates()}
PRIORS = {"standard": StandardPrior(), "matched": MatchedPrior()}


def shipped(group: str, name: str):
    return hydra.utils.instantiate(OmegaConf.load(CONF / group / f"{name}.yaml"))


def mixture(name: str, seed: int) -> GaussianMixture:
    return random_mixture(4, 16, seed=seed) if name == "fresh16" else shipped("data", name)


def times(n: int, t: float) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.float64)


def measure(
    sde: SDE, mix: GaussianMixture, x: torch.Tensor, t_min: float, prior="standard", **kw
) -> dict:
    """One exact-trace solve; the error split of the module docstring."""
    end = {}
    start = time.perf_counter()
    log_pi, prior_nfe = PRIORS[prior](sde, mix.score_fn(sde), x)

    def recording(z: torch.Tensor) -> torch.Tensor:
        end["x_T"] = z
        return log_pi(z)

    logp, nfe = ode_log_likelihood(
        sde, mix.score_fn(sde), x, exact_trace=True, t_min=t_min, prior_logp=recording, **kw
    )
    seconds, nfe = time.perf_counter() - start, nfe + prior_nfe
    n, x_T = len(x), end["x_T"]
    err = logp - mix.log_prob(x, times(n, t_min), sde)
    mismatch = log_pi(x_T) - mix.log_prob(x_T, times(n, sde.T), sde)
    solve = err - mismatch
    return {"total": err.abs().mean(), "prior": mismatch.abs().mean(), "solve": solve.abs().mean(),
            "solve_max": solve.abs().max(), "nfe": nfe, "s": seconds, "logp": logp}  # fmt: skip


def budget(
    sde: SDE, mix: GaussianMixture, x: torch.Tensor, exact: torch.Tensor, t_min: float, prior, **kw
):
    """|log q_{t_min} − log q_0| and one-probe Hutchinson errors against the exact trace."""
    n = len(x)
    out = {"t_min": (mix.log_prob(x, times(n, t_min), sde) - mix.log_prob(x)).abs().mean()}
    for probe in (RademacherProbe(), GaussianProbe()):
        g = torch.Generator().manual_seed(0)
        est, _ = ode_log_likelihood(
            sde, mix.score_fn(sde), x, t_min=t_min, probe=probe, generator=g,
            prior=PRIORS[prior], **kw,
        )  # fmt: skip
        out[repr(probe)] = (est - exact).abs().mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["fresh16", "mixture64", "mixture2d", "ring"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[11], help="fresh16 mixtures")
    parser.add_argument("--priors", nargs="+", default=["standard"], choices=list(PRIORS))
    parser.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve", "ddpm_linear"])
    parser.add_argument("--coordinates", nargs="+", default=list(COORDINATES))
    parser.add_argument("--methods", nargs="+", default=["RK45"])
    parser.add_argument(
        "--tols", nargs="+", type=float, default=[1e-5], help="rtol = atol = logp_atol"
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--t-min", type=float, default=1e-5)
    parser.add_argument("--budget", action="store_true", help="t_min and Hutchinson columns")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| data | seed | SDE | prior | coordinates | method | tol | NFE | total | prior mismatch "
          "| solve | solve max | time (s) |" + (" t_min | Hutchinson (Rademacher) | "
          "Hutchinson (Gaussian) |" if args.budget else ""))  # fmt: skip
    print("|---" * (13 + 3 * args.budget) + "|")
    cases = [(d, s) for d in args.data for s in (args.seeds if d == "fresh16" else args.seeds[:1])]
    for (data, seed), sde_name, prior, coords, method, tol in itertools.product(
        cases, args.sdes, args.priors, args.coordinates, args.methods, args.tols
    ):
        mix, sde = mixture(data, seed), shipped("sde", sde_name)
        x = mix.sample64(args.n, torch.Generator().manual_seed(seed + 100))
        kw = {"coordinates": COORDINATES[coords], "method": method}
        kw |= {"rtol": tol, "atol": tol, "logp_atol": tol}
        r = measure(sde, mix, x, args.t_min, prior, **kw)
        row = (
            f"| {data} | {seed if data == 'fresh16' else '–'} | {sde_name} | {prior} | {coords} "
            f"| {method} | {tol:g} | {r['nfe']} | {r['total']:.4f} | {r['prior']:.4f} | "
            f"{r['solve']:.2e} | {r['solve_max']:.2e} | {r['s']:.1f} |"
        )
        if args.budget:
            b = budget(sde, mix, x, r["logp"], args.t_min, prior, **kw)
            row += " | ".join(f" {v:.2e}" for v in b.values()) + " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
