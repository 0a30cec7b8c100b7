"""The shared loop of every reverse-time solver: grid, NFE count, record, progress, denoising.

A solver is called as ``solver(sde, score_fn, x_T, generator=None, record=False)`` and returns a
``SampleResult``. Each solver class declares what it is (``order``, ``stochastic``,
``evals_per_step``, ``adaptive``); its options are checked once in ``__init__`` and the one
SDE-dependent option, t_min < T, once per call in ``Solver.__call__``. Fixed-step solvers subclass
``FixedStepSolver`` and write only ``step``.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor

from sde_gen.runtime.progress import progress_bar
from sde_gen.sde import SDE
from sde_gen.sde.coordinates import coefficients_at
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn
from sde_gen.solvers.first_eval import FirstEval, PriorMeanCache
from sde_gen.solvers.grids import Grid, UniformGrid
from sde_gen.solvers.options import check_enum

__all__ = [
    "SampleResult",
    "FinalStep",
    "ScoreFn",
    "StepContext",
    "Solver",
    "FixedStepSolver",
    "check_int",
    "coefficients_at",
]


@dataclass
class SampleResult:
    """Samples x0, the number of score evaluations, (if recorded) the path x_t at ``times``, and
    for error-controlled solvers the step log: (t, h, accepted) for every attempted step."""

    x0: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Tensor | None = None
    steps_log: list[tuple[float, float, bool]] | None = None


class FinalStep(str, Enum):
    """Where the last step of a data-prediction solver goes (option ``final_step``).

    ``zero``: the grid's last time t_min is replaced by 0, so the last step t_{N−1} → 0 returns
    x̂0 of the evaluation at t_{N−1} (first order: the s → 0 limit of every step, σ_s = 0; Lu et
    al. 2022b's ``lower_order_final``): N steps, N evaluations, no Tweedie step.
    ``zero_from_t_min``: the N evaluations are the grid of N − 1 steps from T to t_min, and the last
    step jumps from t_min to 0 (the noise levels of k-diffusion's and diffusers' Karras and Lu-λ
    schedules): the last evaluation is at t_min, one grid step lower than with ``zero``, and the
    other steps are longer. ``t_min``: the grid ends at t_min (``denoise_final`` may add one
    Tweedie evaluation there).
    """

    ZERO = "zero"
    ZERO_FROM_T_MIN = "zero_from_t_min"
    T_MIN = "t_min"

    def __repr__(self) -> str:
        return repr(self.value)


def _check_x_T(x_T: Any) -> None:
    if not isinstance(x_T, Tensor) or x_T.ndim < 1 or not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating tensor of shape (B, ...), got {x_T!r:.80}")
    if x_T.device.type == "meta":
        raise ValueError(
            "x_T is on device='meta' (a shape without values): give the solver a tensor on a "
            "real device (x_T.to('cpu'), or 'cuda')"
        )
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
    Sampling runs under ``torch.no_grad()``.

    Every solver class declares: ``order`` (global convergence order of its deterministic part),
    ``stochastic`` (draws noise from the generator), ``evals_per_step`` (score evaluations a step;
    None where the solver picks its steps) and ``adaptive`` (error-controlled steps).
    """

    order: float
    stochastic: bool
    evals_per_step: int | None
    adaptive: bool
    #: True where the solver's own last step already lands on x0 at t = 0 (no extra Tweedie step)
    ends_at_zero: ClassVar[bool] = False

    def __init__(self, t_min: float = 1e-3, denoise_final: bool = False, progress: bool = False):
        self.t_min = _check_t_min(t_min)
        self.denoise_final = bool(denoise_final)
        self.progress = bool(progress)

    def expected_nfe(self) -> int | None:
        """The exact number of score evaluations of one call; None where the solver adapts it."""
        return None

    def _check_final_step(self, final_step: FinalStep | str) -> None:
        """Set ``final_step`` (checked once); ending at zero excludes ``denoise_final``."""
        self.final_step = check_enum("final_step", final_step, FinalStep)
        self.ends_at_zero = self.final_step is not FinalStep.T_MIN
        if self.ends_at_zero and self.denoise_final:
            raise ValueError(
                f"denoise_final=True needs final_step='t_min' (final_step={self.final_step.value!r}"
                " already ends at t = 0)"
            )

    def __call__(
        self,
        sde: SDE,
        score_fn: ScoreCallable,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        record: bool = False,
    ) -> SampleResult:
        _check_x_T(x_T)
        if not self.t_min < sde.T:
            raise ValueError(f"t_min={self.t_min} must be < T={sde.T}")
        # fixed-step solvers show a bar over steps; the others one over score evaluations
        score = ScoreFn(score_fn, sde, self.progress and not isinstance(self, FixedStepSolver))
        times: list[float] = []
        path: list[Tensor] = []

        def keep(t: float, x: Tensor) -> None:
            if record:
                times.append(t)
                path.append(x.detach().clone())

        try:
            with torch.no_grad():  # sampling only; a score_fn needing autograd enables it itself
                x = self.integrate(sde, score, x_T, generator, keep, record)
                x, steps_log = x if isinstance(x, tuple) else (x, None)
                if self.denoise_final and not self.ends_at_zero:
                    x = score.x0(x, self.t_min)
                    keep(0.0, x)
        finally:
            score.close()
        if not record:
            return SampleResult(x, score.nfe, steps_log=steps_log)
        recorded = torch.tensor(times, dtype=torch.float64), torch.stack(path)
        return SampleResult(x, score.nfe, *recorded, steps_log=steps_log)

    @abstractmethod
    def integrate(
        self,
        sde: SDE,
        score: ScoreFn,
        x_T: Tensor,
        generator: torch.Generator | None,
        keep: Callable[[float, Tensor], None],
        record: bool,
    ) -> Tensor | tuple[Tensor, list[tuple[float, float, bool]]]:
        """Carry x_T from T to t_min, calling ``keep(t, x)`` at each recorded time; an
        error-controlled solver returns (x, steps_log) with (t, h, accepted) per attempted step."""


@dataclass
class StepContext:
    """What one step may use: the SDE, the counted score, the random generator, the position in
    the grid, ``memory`` (per-call state of multistep methods, never kept on the solver), and the
    schedule on the grid as floats — f, g², γ, σ at each time and, between neighbours t > s, the
    transition (γ_{t|s}, σ²_{t|s}) and posterior variance — tabulated once per call."""

    sde: SDE
    score: ScoreFn
    generator: torch.Generator | None
    times: Tensor
    index: int
    memory: dict[str, Any] = field(default_factory=dict)
    _coefs: dict[float, tuple[float, ...]] = field(default_factory=dict, repr=False)
    _steps: dict[tuple[float, float], tuple[float, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        grid = self.times.tolist()
        columns = (c.tolist() for c in self.sde.coefficients(self.times))
        self._coefs.update(zip(grid, zip(*columns, strict=True), strict=True))
        s, t = self.times[1:], self.times[:-1]
        gamma_ts, var_ts = self.sde.transition(s, t)
        var_post = self.sde.posterior(s, t)[2]
        rows = zip(gamma_ts.tolist(), var_ts.tolist(), var_post.tolist(), strict=True)
        self._steps.update(zip(zip(grid[:-1], grid[1:], strict=True), rows, strict=True))

    def _coef(self, i: int, t: float) -> float:
        row = self._coefs.get(t)
        if row is None:  # a time off the grid (e.g. a midpoint): evaluate it once and keep it
            row = self._coefs[t] = tuple(coefficients_at(self.sde, t))
        return row[i]

    def _step(self, i: int, t: float, s: float) -> float:
        row = self._steps.get((t, s))
        if row is None:
            s64, t64 = (torch.tensor([u], dtype=torch.float64) for u in (s, t))
            gamma_ts, var_ts = self.sde.transition(s64, t64)
            var_post = self.sde.posterior(s64, t64)[2]
            row = self._steps[(t, s)] = (float(gamma_ts[0]), float(var_ts[0]), float(var_post[0]))
        return row[i]

    def f(self, t: float) -> float:
        """f(t)."""
        return self._coef(0, t)

    def g2(self, t: float) -> float:
        """g(t)²."""
        return self._coef(1, t)

    def gamma(self, t: float) -> float:
        """γ_t."""
        return self._coef(2, t)

    def sigma(self, t: float) -> float:
        """σ_t."""
        return self._coef(3, t)

    def transition(self, t: float, s: float) -> tuple[float, float]:
        """(γ_{t|s}, σ²_{t|s}) of q(x_t | x_s), s < t (``SDE.transition``)."""
        return self._step(0, t, s), self._step(1, t, s)

    def posterior_variance(self, t: float, s: float) -> float:
        """β̃ = σ²_{t|s} σ_s²/σ_t², the variance of q(x_s | x_t, x0) (``SDE.posterior``)."""
        return self._step(2, t, s)

    def x0(self, x: Tensor, t: float) -> Tensor:
        """Tweedie's x̂0 = (x + σ_t² s_θ(x, t))/γ_t: one score evaluation."""
        return self.score.x0(x, t)

    def eps(self, x: Tensor, t: float) -> Tensor:
        """ε̂ = −σ_t s_θ(x, t): one score evaluation."""
        return self.score.eps(x, t)

    @property
    def is_last(self) -> bool:
        return self.index == len(self.times) - 2

    @property
    def steps_left(self) -> int:
        """Steps from this one to the end, this one included (``lower_order_final``'s cap)."""
        return len(self.times) - 1 - self.index

    def noise(self, x: Tensor) -> Tensor:
        """z ~ N(0, I) like x, from ``generator``."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)


class FixedStepSolver(Solver):
    """A solver that steps along a ``grid`` of ``steps + 1`` times from T to ``t_min``.

    The shared options live here, once: ``steps``, ``t_min``, ``grid``, ``denoise_final`` and
    ``progress`` (positional in that order); ``None`` takes the class's declared
    ``default_steps``, ``default_grid``, ``default_denoise_final``. A subclass declares its own
    options as keyword-only, passes the rest on (``*shared, **options``) and implements
    ``step(ctx, x, t, s)`` carrying x_t to x_s (s < t).
    """

    adaptive = False
    default_steps: ClassVar[int] = 50
    default_grid: ClassVar[Grid] = UniformGrid()
    default_denoise_final: ClassVar[bool] = False
    #: solvers with a ``final_step`` option set it per instance (``_check_final_step``)
    final_step: FinalStep = FinalStep.T_MIN
    #: constructor options kept under another attribute name (for ``repr``)
    option_attributes: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        steps: int | None = None,
        t_min: float = 1e-3,
        grid: Grid | None = None,
        denoise_final: bool | None = None,
        progress: bool = False,
        *,
        first_eval: FirstEval | str = FirstEval.MODEL,
    ):
        if denoise_final is None:
            denoise_final = self.default_denoise_final
        super().__init__(t_min=t_min, denoise_final=denoise_final, progress=progress)
        self.steps = check_int("steps", self.default_steps if steps is None else steps, 1)
        self.grid = self.default_grid if grid is None else grid
        if not isinstance(self.grid, Grid):
            kinds = ", ".join(sorted(f"{k.__name__}()" for k in Grid.__subclasses__()))
            raise ValueError(
                f"grid={grid!r} is not a Grid; use one of {kinds} (from a config: solver/grid=…)"
            )
        self.first_eval = check_enum("first_eval", first_eval, FirstEval)
        if self.first_eval is FirstEval.PRIOR_MEAN and type(self).integrate is not _STEP_LOOP:
            raise ValueError(
                f"first_eval='prior_mean' needs the step loop that starts at T; "
                f"{type(self).__name__} integrates its own way: use first_eval='model'"
            )
        self._prior_means = PriorMeanCache()

    def __repr__(self) -> str:
        names = {k: self.option_attributes.get(k, k) for k in _option_names(type(self))}
        opts = ", ".join(f"{k}={getattr(self, a)!r}" for k, a in names.items())
        return f"{type(self).__name__}({opts})"

    def expected_nfe(self) -> int:
        """steps · evals_per_step, + 1 for ``denoise_final`` unless the last step lands on x0,
        − 1 for ``first_eval='prior_mean'`` (the evaluation at T is m_T, ``first_eval``)."""
        denoise = int(self.denoise_final and not self.ends_at_zero)
        free_start = int(self.first_eval is FirstEval.PRIOR_MEAN)
        return self.steps * self.evals_per_step + denoise - free_start

    def time_grid(self, sde: SDE) -> Tensor:
        """The float64 times t_0 = T > … > t_N at which x is carried: t_N = 0 when the solver
        ends at zero, else t_min; with ``final_step='zero_from_t_min'`` t_{N−1} = t_min (the grid
        of N − 1 steps, then 0)."""
        if self.final_step is not FinalStep.ZERO_FROM_T_MIN:
            times = self.grid(sde, self.steps, self.t_min)
            if self.ends_at_zero:
                times[-1] = 0.0
            return times
        if not self.grid.standalone:
            raise ValueError(
                f"final_step='zero_from_t_min' takes a grid of steps − 1 = {self.steps - 1} steps,"
                f" not {self.grid!r}, made for {self.steps}: use final_step='zero' with it"
            )
        if self.steps == 1:  # one evaluation, at T, and the jump to 0
            return torch.tensor([sde.T, 0.0], dtype=torch.float64)
        times = self.grid(sde, self.steps - 1, self.t_min)
        return torch.cat([times, times.new_zeros(1)])

    def integrate(self, sde, score, x_T, generator, keep, record) -> Tensor:
        times = self.time_grid(sde)
        ctx = StepContext(sde, score, generator, times, 0)
        if self.first_eval is FirstEval.PRIOR_MEAN:
            score.start_from(sde.T, self._prior_means.get(sde, score.score_fn, x_T).x0)
        x = x_T
        keep(sde.T, x)
        grid = times.tolist()
        bar = progress_bar(self.progress, total=len(grid) - 1, desc=type(self).__name__)
        with bar:
            for i in range(len(grid) - 1):
                ctx.index = i
                x = self.step(ctx, x, grid[i], grid[i + 1])
                keep(grid[i + 1], x)
                bar.update()
        return x

    @abstractmethod
    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        """Carry x from time t to the earlier time s."""


_STEP_LOOP = FixedStepSolver.integrate


def _option_names(cls: type) -> list[str]:
    """The constructor options of a fixed-step solver class: ``steps``, ``t_min``, ``grid``, each
    subclass's own (its ``__init__``'s named parameters, base class first), then
    ``denoise_final`` and ``progress``."""
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    names: list[str] = []
    for klass in reversed(cls.__mro__[: cls.__mro__.index(FixedStepSolver) + 1]):
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            names += [p.name for p in params if p.name != "self" and p.kind not in kinds]
    return [*names[:3], *names[5:], *names[3:5]]
