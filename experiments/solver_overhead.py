"""Solver overhead with a U-Net score: (time of a sampling run − time in score calls) / total.

Every solver samples the same batch with the same network in one process; the repeats are
interleaved (solver A, B, …, A, B, …) so that machine load hits all alike; the median over repeats
is reported. The network is the project's U-Net with random weights (its zero-initialised last
layer is re-drawn so that ε_θ ≠ 0); sampling runs under ``torch.no_grad``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import hydra
import torch
from hydra import compose
from omegaconf import DictConfig
from torch import Tensor

from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.wrap import score_model_from_config
from sde_gen.runtime.files import atomic_write


class TimedScore:
    """score_fn(x, t) that adds the wall time spent inside it to ``seconds``."""

    def __init__(self, score_fn):
        self.score_fn, self.seconds, self.calls = score_fn, 0.0, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = self.score_fn(x, t)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def build_score(cfg: DictConfig, sde) -> ScoreModel:
    net = score_model_from_config(cfg.model, sde, tuple(cfg.shape)).eps_net
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.abs().sum() > 0:  # the zero-initialised output layer
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return ScoreModel(net.eval(), sde)


def load_solver(name: str, overrides: DictConfig):
    """conf/solver/<name>.yaml composed with its grid (inside the running Hydra app), with
    ``overrides`` on the keys it has."""
    cfg = compose(config_name="solver_overhead", overrides=[f"+solver={name}"]).solver
    for key, value in overrides.items():
        if key in cfg:
            cfg[key] = value
    return hydra.utils.instantiate(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="solver_overhead")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    sde = hydra.utils.instantiate(cfg.sde)
    score = build_score(cfg, sde)
    solvers = {name: load_solver(name, cfg.solver_overrides) for name in cfg.solvers}
    params = sum(p.numel() for p in score.parameters())
    x_T = sde.prior_sample((cfg.batch, *cfg.shape), torch.Generator().manual_seed(cfg.seed))
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in solvers}
    with torch.no_grad():
        score(x_T[:2], torch.full((2,), 0.5))  # warm-up
        for _ in range(cfg.repeats):
            for name, solver in solvers.items():
                timed = TimedScore(score)
                t0 = time.perf_counter()
                result = solver(sde, timed, x_T, generator=torch.Generator().manual_seed(1))
                total = time.perf_counter() - t0
                runs[name].append((total, timed.seconds, result.nfe))
    lines = [
        f"U-Net {params / 1e3:.0f}k parameters, batch {cfg.batch}×{tuple(cfg.shape)}, "
        f"{cfg.steps} steps, {cfg.threads} thread(s), median of {cfg.repeats} interleaved repeats",
        "",
        "| solver | NFE | total (s) | in score (s) | overhead | per-step overhead (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        overheads = [(tot - sc) / tot for tot, sc, _ in rs]
        i = overheads.index(statistics.median(overheads))
        tot, sc, nfe = rs[i]
        per_step = 1e3 * (tot - sc) / cfg.steps
        lines.append(
            f"| {name} | {nfe} | {tot:.3f} | {sc:.3f} | {100 * overheads[i]:.2f} % | "
            f"{per_step:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    out = Path(cfg.out_dir) / "solver_overhead.md"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
