"""10-evaluation end-point errors on a trained network over a large held-out set of x_T.

    PYTHONPATH=<diffusers site>:experiments python experiments/network_heldout.py \\
        --checkpoint <run>/checkpoints/step_00002300.pt --n 2048 --seed 2000 \\
        --fitted 1.0 0.8432 0.6590 0.4715 0.3681 0.2651 0.1702 0.0895 0.0412 0.0106 0.001

The reference is UniPC-3 at ``--teacher-steps`` steps on the quadratic grid, a quick stand-in;
the comparison itself (``solver_comparison.py checkpoint=… n_network=2048``) solves a DOP853
reference in cached chunks of 128 x_T, about 3–4.5 s per x_T on a 2-core CPU. Rows: ours
UniPC-2 on the quadratic grid and on ``--fitted`` times (a grid fitted on other x_T), and the
diffusers configurations of ``--peers`` (``experiments/conf/solver/<name>.yaml`` at 10 steps;
skipped without diffusers).
Prints RMS and median ‖x̂ − x_ref‖ and the ratio best peer ÷ each of ours.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from hydra.utils import instantiate
from network_reference import load_network
from omegaconf import OmegaConf

from sde_gen.metrics.mixtures import endpoint_error
from sde_gen.solvers import FittedGrid, QuadraticGrid, UniPC

CONF = Path(__file__).parent / "conf" / "solver"
PEERS = ["diffusers_unipc_bh1", "diffusers_unipc3_bh1_trailing", "diffusers_unipc",
         "diffusers_deis_trailing", "diffusers_dpm_3m_trailing"]  # fmt: skip


def errors(x0: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """RMS end-point error (``metrics.endpoint_error``) and the median of ‖x̂_i − x_ref,i‖."""
    median = (x0.to(torch.float64) - ref).flatten(1).norm(dim=1).median()
    return endpoint_error(x0.flatten(1), ref.flatten(1)), float(median)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--teacher-steps", type=int, default=200)
    parser.add_argument("--fitted", nargs="+", type=float, default=None, help="T … t_min")
    parser.add_argument("--peers", nargs="*", default=PEERS)
    args = parser.parse_args()
    net = load_network(args.checkpoint)
    sde, g = net.sde, torch.Generator().manual_seed(args.seed)
    x_T = sde.prior_sample((args.n, *net.shape), g, dtype=torch.float64)
    teacher = UniPC(steps=args.teacher_steps, order=3, grid=QuadraticGrid())
    ref = teacher(sde, net.score_fn, x_T).x0.to(torch.float64)
    ours = {"ours UniPC-2 quadratic": QuadraticGrid()}
    if args.fitted:
        ours["ours UniPC-2 fitted"] = FittedGrid(args.fitted)
    rows = {k: errors(UniPC(steps=10, order=2, grid=v)(sde, net.score_fn, x_T).x0, ref)
            for k, v in ours.items()}  # fmt: skip
    peers = {}
    if importlib.util.find_spec("diffusers") is not None:
        for name in args.peers:
            cfg = OmegaConf.load(CONF / f"{name}.yaml")
            cfg.steps = 10
            peers[name] = errors(instantiate(cfg)(sde, net.score_fn, x_T).x0, ref)
    best = min((v[0] for v in peers.values()), default=float("nan"))
    print(f"| configuration | RMS (median) on {args.n} x_T | best peer ÷ this |")
    print("|---|---|---|")
    for name, (rms, med) in {**rows, **peers}.items():
        ratio = f"{best / rms:.2f}×" if name in rows else ""
        print(f"| {name} | {rms:.3f} ({med:.3f}) | {ratio} |")


if __name__ == "__main__":
    main()
