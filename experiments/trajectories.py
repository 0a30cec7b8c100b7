"""Trajectory figures on the ring mixture with its exact score (survey §4.1–4.3).

    .venv/bin/python experiments/trajectories.py                       # → results/trajectories/
    .venv/bin/python experiments/trajectories.py --docs docs/figures   # also copy the small PNGs

Draws the forward process x0 → x_T over the exact q_t (and on four digits), the reverse paths
of a few solvers (each from the same x_T, over q_t), and the schedule/weighting curves λ(t), r(t)
of the VP and VE SDEs.
Writes ``index.md`` beside the figures with each solver's NFE, time and exact-density metrics.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import hydra
import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_module
from matplotlib.figure import Figure

import sde_gen
from sde_gen import plotting
from sde_gen.data import Digits, ring_mixture
from sde_gen.sample import exact_metrics
from sde_gen.sde import VESDE, VPSDE

CONF = Path(sde_gen.__file__).parent / "conf"
DEFAULT_SOLVERS = "euler_maruyama:100,pf_ode,dpm_solver:20,heun:18"
DOC_FIGURES = (
    "forward.png",
    "trajectories_euler_maruyama.png",
    "trajectories_pf_ode.png",
    "weighting_vp.png",
)


def save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def parse_solvers(spec: str) -> list[tuple[str, int | None]]:
    """``name[:steps],…`` → [(name, steps or None)]; names are files of conf/solver/."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, steps = item.partition(":")
        if not (CONF / "solver" / f"{name}.yaml").is_file():
            known = sorted(p.stem for p in (CONF / "solver").glob("*.yaml"))
            raise ValueError(f"solver {name!r} is not in conf/solver; available: {known}")
        out.append((name, int(steps) if steps else None))
    return out


def load_solver(name: str, steps: int | None):
    """conf/solver/<name>.yaml composed as ``sde-gen-sample solver=<name> [solver.steps=…]``
    (an adaptive solver has no ``steps``: giving it some is a composition error)."""
    overrides = [f"solver={name}", "solver.progress=false"]
    if steps is not None:
        overrides.append(f"solver.steps={steps}")
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return hydra.utils.instantiate(compose("sample", overrides=overrides).solver)


def steps_shown(solver) -> str:
    if solver.adaptive:
        return "adaptive"
    return str(getattr(solver, "steps", None) or solver.backend.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/trajectories", help="output folder")
    parser.add_argument("--solvers", default=DEFAULT_SOLVERS, help="name[:steps],…")
    parser.add_argument("--n", type=int, default=300, help="particles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpi", type=int, default=80)
    parser.add_argument("--docs", default=None, help="copy the guide's figures into this folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    sde, mix = VPSDE(), ring_mixture(num_modes=8, radius=2.0, std=0.15)
    density = plotting.mixture_density(mix, sde)
    gen = torch.Generator().manual_seed(args.seed)
    x0 = mix.sample64(args.n, gen)
    fig = plotting.plot_forward_2d(x0, sde, [0.0, 0.1, 0.25, 0.5, 1.0], None, density, gen)
    save(fig, out / "forward.png", args.dpi)
    digits = Digits().sample(4, torch.Generator().manual_seed(args.seed))
    fig = plotting.plot_forward_images(digits, sde, [0.0, 0.05, 0.1, 0.2, 0.4, 1.0], None, gen)
    save(fig, out / "forward_digits.png", args.dpi)
    save(plotting.plot_weighting_curves(sde), out / "weighting_vp.png", args.dpi)
    save(plotting.plot_weighting_curves(VESDE()), out / "weighting_ve.png", args.dpi)

    x_T = sde.prior_sample((args.n, 2), torch.Generator().manual_seed(args.seed + 1), torch.float64)
    rows = [
        "| solver | steps | NFE | time (s) | NLL gap (nats) | MMD² |",
        "|---|---|---|---|---|---|",
    ]
    for name, steps in parse_solvers(args.solvers):
        solver = load_solver(name, steps)
        start = time.perf_counter()
        res = solver(sde, mix.score_fn(sde), x_T.clone(), torch.Generator().manual_seed(2), True)
        elapsed = time.perf_counter() - start
        fig = plotting.plot_reverse_trajectories(
            res.trajectory, res.times, None, density, max_paths=40, title=f"{name}, NFE {res.nfe}"
        )
        save(fig, out / f"trajectories_{name}.png", args.dpi)
        m = exact_metrics(mix, res.x0, args.seed)
        rows.append(
            f"| {name} | {steps_shown(solver)} | {res.nfe} | {elapsed:.2f} "
            f"| {m['nll_gap']:.3f} | {m['mmd2']:.2e} |"
        )
        print(rows[-1])
    (out / "index.md").write_text(
        f"# Trajectories on the ring mixture (n = {args.n}, seed {args.seed}, exact score, VP SDE)"
        "\n\n" + "\n".join(rows) + "\n"
    )
    if args.docs:
        dest = Path(args.docs)
        dest.mkdir(parents=True, exist_ok=True)
        for name in DOC_FIGURES:
            if (out / name).is_file():
                shutil.copy(out / name, dest / name)
    print(f"figures in {out.resolve()}")


if __name__ == "__main__":
    main()
