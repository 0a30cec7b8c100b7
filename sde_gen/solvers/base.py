"""The shared loop of every reverse-time solver: grid, NFE count, record, progress, denoising.

A solver is called as ``solver(sde, score_fn, x_T, generator=None, record=False)`` and returns a
``SampleResult``. Fixed-step solvers subclass ``FixedStepSolver`` and write only ``step``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sde_gen.sde import SDE
from sde_gen.solvers.grids import Grid, UniformGrid, make_grid

__all__ = [
    "SampleResult",
    "CountedScore",
    "StepContext",
    "Solver",
    "FixedStepSolver",
    "scalar",
    "check_int",
    "tweedie_x0",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SampleResult:
    """Samples x0, the number of score evaluations, and (if recorded) the path x_t at ``times``."""

    x0: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Tensor | None = None


def scalar(fn: Callable[[Tensor], Tensor], t: float) -> float:
    """A schedule coefficient (sde.gamma, sde.sigma, …) at one time, as a float64 Python float."""
    return float(fn(torch.tensor([t], dtype=torch.float64))[0])


class CountedScore:
    """score_fn(x, t) at one scalar time, counting evaluations and checking the output."""

    def __init__(self, score_fn: ScoreFn, progress: bool = False):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.nfe = 0
        self.bar = tqdm(unit="nfe", desc="score evaluations") if progress else None

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        if isinstance(t, Tensor) and t.ndim == 1:
            t_vec = t.to(device=x.device, dtype=x.dtype)
        else:
            t_vec = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        out = self.score_fn(x, t_vec)
        self.nfe += 1
        t_show = float(t_vec[0]) if t_vec.numel() else float("nan")
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(t=f"{t_show:.4g}", refresh=False)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"score_fn at t={t_show:.6g} returned shape {got}, expected {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"score_fn at t={t_show:.6g} returned NaN or inf (output shape {tuple(out.shape)})"
            )
        return out


def tweedie_x0(sde: SDE, score: CountedScore, x: Tensor, t: float) -> Tensor:
    """Tweedie's denoiser x̂0 = (x + σ_t² ∇log q_t(x)) / γ_t."""
    return (x + scalar(sde.sigma, t) ** 2 * score(x, t)) / scalar(sde.gamma, t)


def _check_x_T(x_T: Any) -> None:
    if not isinstance(x_T, Tensor) or x_T.ndim < 1 or not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating tensor of shape (B, ...), got {x_T!r:.80}")
    if not bool(torch.isfinite(x_T).all()):
        raise ValueError("x_T contains NaN or inf")


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum`` (bools rejected), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def _check_t_min(t_min: float) -> float:
    if not (isinstance(t_min, int | float) and math.isfinite(t_min) and t_min > 0):
        raise ValueError(f"t_min={t_min} must be a finite number > 0")
    return float(t_min)


class Solver(ABC):
    """Common options: ``t_min`` (where integration stops), ``denoise_final`` (a last Tweedie
    step x0 = (x + σ² s)/γ at t_min, one more NFE) and ``progress`` (a tqdm bar).
    Sampling runs under ``torch.no_grad()``."""

    #: True where the solver's own last step already lands on x0 at t = 0 (no extra Tweedie step)
    ends_at_zero: bool = False

    def __init__(self, t_min: float = 1e-3, denoise_final: bool = False, progress: bool = False):
        self.t_min = _check_t_min(t_min)
        self.denoise_final = bool(denoise_final)
        self.progress = bool(progress)

    def __call__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        record: bool = False,
    ) -> SampleResult:
        _check_x_T(x_T)
        if not self.t_min < sde.T:
            raise ValueError(f"t_min={self.t_min} must be < T={sde.T}")
        # fixed-step solvers show a bar over steps; the others one over score evaluations
        score = CountedScore(score_fn, self.progress and not isinstance(self, FixedStepSolver))
        times: list[float] = []
        path: list[Tensor] = []

        def keep(t: float, x: Tensor) -> None:
            if record:
                times.append(t)
                path.append(x.detach().clone())

        try:
            with torch.no_grad():  # sampling only; a score_fn needing autograd enables it itself
                x = self._run(sde, score, x_T, generator, keep, record)
        finally:
            if score.bar is not None:
                score.bar.close()
        if not record:
            return SampleResult(x, score.nfe)
        return SampleResult(
            x, score.nfe, torch.tensor(times, dtype=torch.float64), torch.stack(path)
        )

    def _run(self, sde, score, x_T, generator, keep, record) -> Tensor:
        x = self.integrate(sde, score, x_T, generator, keep, record)
        if self.denoise_final and not self.ends_at_zero:
            x = tweedie_x0(sde, score, x, self.t_min)
            keep(0.0, x)
        return x

    @abstractmethod
    def integrate(
        self,
        sde: SDE,
        score: CountedScore,
        x_T: Tensor,
        generator: torch.Generator | None,
        keep: Callable[[float, Tensor], None],
        record: bool,
    ) -> Tensor:
        """Carry x_T from T to t_min, calling ``keep(t, x)`` at each recorded time."""


@dataclass
class StepContext:
    """What one step may use: the SDE, the counted score, the random generator, the position in
    the grid, and ``memory`` — per-call state of multistep methods (never kept on the solver)."""

    sde: SDE
    score: CountedScore
    generator: torch.Generator | None
    times: Tensor
    index: int
    memory: dict[str, Any] = field(default_factory=dict)
    _table: dict[tuple[str, float], float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("f", "g2", "gamma", "sigma"):
            values = getattr(self.sde, name)(self.times).tolist()
            self._table.update(
                {(name, t): v for t, v in zip(self.times.tolist(), values, strict=True)}
            )

    def _coef(self, name: str, t: float) -> float:
        value = self._table.get((name, t))
        return scalar(getattr(self.sde, name), t) if value is None else value

    def f(self, t: float) -> float:
        """f(t), from a table of the grid times."""
        return self._coef("f", t)

    def g2(self, t: float) -> float:
        """g(t)²."""
        return self._coef("g2", t)

    def gamma(self, t: float) -> float:
        """γ_t."""
        return self._coef("gamma", t)

    def sigma(self, t: float) -> float:
        """σ_t."""
        return self._coef("sigma", t)

    @property
    def is_last(self) -> bool:
        return self.index == len(self.times) - 2

    def noise(self, x: Tensor) -> Tensor:
        """z ~ N(0, I) like x, from ``generator``."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)


class FixedStepSolver(Solver):
    """A solver that steps along a grid of ``steps + 1`` times from T to ``t_min``.

    Subclasses implement ``step(ctx, x, t, s)`` carrying x_t to x_s (s < t).
    """

    def __init__(
        self,
        steps: int = 50,
        t_min: float = 1e-3,
        grid: Grid | str = "uniform",
        denoise_final: bool = False,
        progress: bool = False,
    ):
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        self.steps = check_int("steps", steps, 1)
        self.grid = make_grid(grid if grid is not None else UniformGrid())

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"

    def time_grid(self, sde: SDE) -> Tensor:
        """The float64 times t_0 = T > … > t_N at which x is carried."""
        return self.grid(sde, self.steps, self.t_min)

    def integrate(self, sde, score, x_T, generator, keep, record) -> Tensor:
        times = self.time_grid(sde)
        ctx = StepContext(sde, score, generator, times, 0)
        x = x_T
        keep(sde.T, x)
        grid = times.tolist()
        with tqdm(total=len(grid) - 1, disable=not self.progress, desc=type(self).__name__) as bar:
            for i in range(len(grid) - 1):
                ctx.index = i
                x = self.step(ctx, x, grid[i], grid[i + 1])
                keep(grid[i + 1], x)
                bar.update()
        return x

    @abstractmethod
    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        """Carry x from time t to the earlier time s."""
