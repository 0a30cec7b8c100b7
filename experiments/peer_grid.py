"""A diffusers scheduler's own noise levels as a grid file for sde_gen's solvers.

The solver comparison sets each side at its own best grid, so a gap between ours and a peer mixes
two causes: the grid and the update formula. This writes the peer's grid as a ``FittedGrid`` file;
any of our fixed-step solvers then steps on exactly the peer's noise levels
(``solver/grid=fitted solver.grid.path=<file>``), and what is left is the formula::

    python experiments/peer_grid.py experiments/conf/solver/diffusers_dpm_3m_lu.yaml \\
        --steps 50 --out grids/dpm_3m_lu_50.yaml

The times are the scheduler's σ_EDM after ``set_timesteps(steps)`` (its timesteps where it has
no σ_EDM), mapped to t by the log-SNR (``ExactEps``) on ``sde=ddpm_linear``, the chain the peers
run on. A peer ends with a jump from its last noise level to σ = 0; the file's last time,
0.9 t_{N−1}, is never reached by our solvers with ``final_step=zero`` (the default), which jump
from t_{N−1} to 0 too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hydra
import torch
from diffusers_peers import ExactEps
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from sde_gen.sde import DiscreteVPSDE
from sde_gen.sde.ddpm import linear_betas
from sde_gen.solvers import FittedGrid

#: where the last time, which our solvers with final_step=zero never reach, sits below t_{N−1}
LAST_FRACTION = 0.9


def peer_times(scheduler, steps: int, sde: DiscreteVPSDE) -> torch.Tensor:
    """t_0 = T > … > t_{N−1} at the scheduler's N noise levels, then LAST_FRACTION · t_{N−1}."""
    chain = {k: scheduler.config.get(k) for k in ("beta_schedule", "beta_start", "beta_end")}
    if chain != {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}:
        raise ValueError(f"the scheduler's chain {chain} is not sde=ddpm_linear's")
    scheduler.set_timesteps(steps)
    eps = ExactEps(sde, lambda x, t: x, scheduler.alphas_cumprod.double().numpy())
    if hasattr(scheduler, "sigmas"):  # the noise levels it steps between
        times = eps.times_of_sigmas(torch.as_tensor(scheduler.sigmas)[:steps])
    else:  # DDIM, DEIS-like schedulers without sigmas: their timesteps
        times = eps.times_of(torch.as_tensor(scheduler.timesteps))
    if len(times) != steps or not bool((times[1:] < times[:-1]).all()):
        raise ValueError(f"{type(scheduler).__name__} has no {steps} decreasing noise levels")
    if abs(float(times[0]) - sde.T) > 1e-4:
        raise ValueError(f"the scheduler starts at t={float(times[0]):.6g}, not at T={sde.T}")
    times[0] = sde.T
    return torch.cat([times, LAST_FRACTION * times[-1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scheduler_config", type=Path, help="a conf/solver/diffusers_*.yaml")
    parser.add_argument("--steps", type=int, required=True, help="the scheduler's steps (= NFE)")
    parser.add_argument("--out", type=Path, required=True, help="the grid file to write")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps} must be >= 1")
        node = OmegaConf.load(args.scheduler_config)
        if "scheduler" not in node:
            raise ValueError("has no 'scheduler' node: not a diffusers_*.yaml peer config")
        scheduler = hydra.utils.instantiate(node.scheduler)
        sde = DiscreteVPSDE(linear_betas(T=1000, beta_start=1e-4, beta_end=0.02))
        times = peer_times(scheduler, args.steps, sde)
    except (OSError, ValueError, KeyError, InstantiationException) as e:
        print(f"error: {args.scheduler_config}: {e}", file=sys.stderr)
        return 2
    info = {"peer": str(args.scheduler_config.stem), "steps": args.steps, "sde": "ddpm_linear"}
    FittedGrid(times.tolist(), info).save(args.out)
    last = float(times[-2])
    print(
        f"{args.out}: {args.steps} steps of {info['peer']}, t = {times[0]:.4g} … {last:.6g}; the "
        f"solver's t_min must be below {last:.6g} (the default 1e-3 is: {1e-3 < last})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
