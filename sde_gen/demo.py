"""``sde-gen-demo``: a 2-D data set diffused by an SDE, drawn at several t (survey §4.1)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.plotting import mixture_density, plot_forward_2d
from sde_gen.runtime.resources import seed_everything, set_threads

log = logging.getLogger("sde_gen.demo")  # not __main__ under python -m or torchrun -m


def forward_figure(cfg: DictConfig) -> Path:
    """Draw ``cfg.n`` points of ``cfg.data`` under ``cfg.sde`` at ``cfg.times``; return the PNG."""
    data, sde = instantiate(cfg.data), instantiate(cfg.sde)
    if tuple(data.shape) != (2,):
        raise ValueError(f"the demo draws 2-D data; data has shape {tuple(data.shape)}")
    times = [float(t) for t in cfg.times]
    bad = [t for t in times if not 0 <= t <= sde.T]
    if bad:
        raise ValueError(f"times {bad} lie outside [0, T={sde.T}]")
    set_threads(cfg.threads)
    generator = seed_everything(int(cfg.seed))
    x0 = data.sample(int(cfg.n), generator)
    exact = data.exact
    density = mixture_density(exact, sde) if exact is not None else None
    title = f"{type(sde).__name__} forward process of {type(data).__name__}, n={int(cfg.n)}"
    return plot_forward_2d(
        x0, sde, times, cfg.out, log_density=density, generator=generator, title=title
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
@user_errors
def _main(cfg: DictConfig) -> None:
    path = forward_figure(cfg)
    log.info("saved %s", Path(path).resolve())


def main() -> Any:
    """``sde-gen-demo``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
