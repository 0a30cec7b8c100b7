"""Typed settings of ``sde-gen-fit-grid`` (schema ``fit_grid_schema`` in Hydra's ConfigStore)."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = ["FitGridConfig", "register_fit_grid_config"]


def _need(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is invalid: need {what}")


@dataclass
class FitGridConfig:
    """``sde-gen-fit-grid``: a score source, a fixed-step solver, pilot and held-out x_T, the search
    budget and the teacher's tolerance."""

    data: Any = MISSING
    sde: Any = MISSING
    solver: Any = MISSING
    checkpoint: str | None = None
    ema: bool = True
    n: int = 1000  # pilot x_T (the fit) and, as many again, held-out x_T (seed + 1)
    n_held_out: int | None = None  # None: n
    seed: int = 0
    maxiter: int = 200  # solver runs of the search
    method: str = "Nelder-Mead"  # scipy.optimize.minimize: Nelder-Mead | Powell
    teacher_tol: float = 1e-7  # rtol = atol of the PF-ODE teacher (DOP853)
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        _need(self.n >= 2, "n", self.n, "an integer >= 2")
        _need(
            self.n_held_out is None or self.n_held_out >= 2,
            "n_held_out",
            self.n_held_out,
            "null or an integer >= 2",
        )
        _need(self.seed >= 0, "seed", self.seed, "a non-negative integer")
        _need(self.maxiter >= 1, "maxiter", self.maxiter, "an integer >= 1")
        methods = ("Nelder-Mead", "Powell")
        _need(self.method in methods, "method", self.method, f"one of {methods}")
        _need(0 < self.teacher_tol < 1, "teacher_tol", self.teacher_tol, "a number in (0, 1)")
        _need(
            self.threads is None or self.threads >= 1,
            "threads",
            self.threads,
            "null or an integer >= 1",
        )


def register_fit_grid_config(store: ConfigStore | None = None) -> None:
    """Store ``fit_grid_schema`` (idempotent)."""
    store = ConfigStore.instance() if store is None else store
    store.store(name="fit_grid_schema", node=FitGridConfig)
