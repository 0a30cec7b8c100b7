"""Evaluations and errors of the PF-ODE log-likelihood at three settings, on unseen 16-D mixtures.

    python experiments/likelihood_tolerances.py --seeds 20-59 --n 8 64 200 --sdes vp

Arms, each with the exact trace against the exact log q_{t_min} of ``random_mixture(4, 16, seed)``
(x drawn with seed + 100), t_min = 1e-5:
  filed    = the default when issue 12 was filed: (x, t) coordinates, the standard prior,
             RK45 with rtol = atol = 1e-5 on every component;
  previous = the angle coordinates and the matched prior with rtol = atol = 1e-5 on every
             component (the default before ``logp_atol``);
  default  = ``ode_log_likelihood``'s defaults (angle coordinates, matched prior, rtol = 1e-5,
             atol = 3e-5 on the state, logp_atol = 1e-3 nats on ∫∇·F).
Prints one row per case and a summary: NFE mean / max, the share of cases under ``--nfe-bar``
evaluations and under the filed arm's count, and the mean absolute error (mean and worst case).
"""

from __future__ import annotations

import argparse
import itertools

import torch

from sde_gen.data import random_mixture
from sde_gen.likelihood.ode import ode_log_likelihood
from sde_gen.likelihood.priors import StandardPrior
from sde_gen.sde import SDE, VESDE, VPSDE, SubVPSDE
from sde_gen.sde.coordinates import AngleCoordinates, TimeCoordinates

T_MIN = 1e-5
TIGHT = {"rtol": 1e-5, "atol": 1e-5, "logp_atol": 1e-5}
ARMS = {
    "filed": {**TIGHT, "coordinates": TimeCoordinates(), "prior": StandardPrior()},
    "previous": {**TIGHT, "coordinates": AngleCoordinates()},
    "default": {},
}
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def seeds(spec: str) -> list[int]:
    first, _, last = spec.partition("-")
    return list(range(int(first), int(last or first) + 1))


def case(sde: SDE, seed: int, n: int) -> dict[str, tuple[int, float]]:
    """{arm: (NFE, mean |log p − log q_{t_min}|)} for one mixture and one draw of x."""
    mix = random_mixture(4, 16, seed=seed)
    x = mix.sample64(n, torch.Generator().manual_seed(seed + 100))
    exact = mix.log_prob(x, torch.full((n,), T_MIN, dtype=torch.float64), sde)
    out = {}
    for arm, kw in ARMS.items():
        logp, nfe = ode_log_likelihood(sde, mix.score_fn(sde), x, exact_trace=True, **kw)
        out[arm] = (nfe, float((logp - exact).abs().mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="20-59", help="first-last mixture seeds (unseen)")
    parser.add_argument("--n", nargs="+", type=int, default=[8, 64, 200])
    parser.add_argument("--sdes", nargs="+", default=["vp"], choices=list(SDES))
    parser.add_argument("--nfe-bar", type=int, default=92, help="the issue's 'today' count")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| SDE | n | seed | " + " | ".join(f"NFE {a} | MAE {a}" for a in ARMS) + " |")
    print("|---" * (3 + 2 * len(ARMS)) + "|")
    rows: dict[tuple[str, int], list[dict]] = {}
    for sde_name, n, seed in itertools.product(args.sdes, args.n, seeds(args.seeds)):
        r = case(SDES[sde_name](), seed, n)
        rows.setdefault((sde_name, n), []).append(r)
        cells = " | ".join(f"{r[a][0]} | {r[a][1]:.5f}" for a in ARMS)
        print(f"| {sde_name} | {n} | {seed} | {cells} |", flush=True)
    print(
        f"\n| SDE | n | cases | arm | NFE mean | NFE max | < {args.nfe_bar} | < filed "
        "| MAE mean | MAE max |"
    )
    print("|---" * 10 + "|")
    for (sde_name, n), rs in rows.items():
        for arm in ARMS:
            nfe = [r[arm][0] for r in rs]
            mae = [r[arm][1] for r in rs]
            under = sum(v < args.nfe_bar for v in nfe)
            fewer = sum(r[arm][0] < r["filed"][0] for r in rs)
            print(f"| {sde_name} | {n} | {len(rs)} | {arm} | {sum(nfe) / len(nfe):.1f} | "
                  f"{max(nfe)} | {under}/{len(rs)} | {fewer}/{len(rs)} | "
                  f"{sum(mae) / len(mae):.4f} | {max(mae):.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
