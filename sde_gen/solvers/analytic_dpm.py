"""Analytic-DPM (Bao et al. 2022): ancestral sampling with the KL-optimal variance of each step.

A step t → s keeps the DDPM mean μ̃(x_t, x̂0) = (x_t + β s_θ)/γ_{t|s} (``Ancestral``) and adds
noise of variance (Theorem 1 with λ² = β̃, any skip s < t, any linear SDE)

    σ*² = β̃ + (√(σ_t²/α) − √(σ_s² − β̃))² (1 − Γ_t),  α = γ_{t|s}²,  Γ_t = E_{q_t}‖ε_θ(x_t, t)‖²/d,

with Γ_t estimated once by Monte Carlo on data (``calibrate``; ``sde_gen.solvers.calibration``,
by default from the residual ε − ε_θ, see ``Estimator``) and clipped into the range Theorem 2
allows: always [0, 1], and with ``clip`` the bound for data in ``data_range`` = [a, b]
(Cov[x0 | x_t] ≤ ((b − a)/2)², as the paper's clipped estimate). The
paper's sampling experiments also cap σ of the last noisy step (``final_std_max``: they allow
E|σ z| ≤ 2 levels of 8-bit data in [−1, 1], σ ≤ 2·(2/255)·√(π/2) ≈ 0.0197).

The default grid is the paper's optimal trajectory (``OptimalTrajectory``, their §4): Γ_t is
estimated at candidate times and the noisy steps are the cheapest path through them in the bound.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from sde_gen.runtime.files import check_writable
from sde_gen.sde import SDE
from sde_gen.sde.base import finite_float
from sde_gen.sde.reverse_variance import ms_eps_range, optimal_variance
from sde_gen.sde.score_fn import ScoreCallable, ScoreFn
from sde_gen.solvers import calibration as cal
from sde_gen.solvers.ancestral import Ancestral, Variance, check_range
from sde_gen.solvers.base import StepContext, check_int
from sde_gen.solvers.grids import Grid
from sde_gen.solvers.optimal_trajectory import OptimalTrajectory, cheapest_path, hop_costs

__all__ = ["AnalyticDPM"]


class AnalyticDPM(Ancestral):
    """Ancestral sampling (``steps`` evaluations; ``denoise_final`` as ``Ancestral``) with the
    variance σ*² of Analytic-DPM. It needs ``calibrate(sde, score_fn, data)`` once before
    sampling (``needs_data``: ``sde-gen-sample`` calls it with the score source's data); the
    ``mc_samples`` data draws (in batches of ``mc_batch``, seed ``mc_seed``, ``estimator``
    residual | eps_norm) give Γ_t at the start of each noisy step, (steps − 1)·⌈mc_samples/
    mc_batch⌉ evaluations that are not counted in the sampling NFE; on the default
    ``OptimalTrajectory`` grid at each of its candidates instead (``candidates``·⌈…⌉), and the
    steps are then the cheapest path in the bound. ``cache_dir`` keeps calibrations on disk (for
    a named score source). ``step_variances`` gives σ*² of the noisy steps (before the
    ``final_std_max`` cap).
    """

    needs_data: ClassVar[bool] = True

    default_steps = 100
    default_grid: ClassVar[Grid] = OptimalTrajectory()

    def __init__(
        self,
        *shared: Any,
        mc_samples: int = 10000,
        mc_batch: int = 1000,
        mc_seed: int = 0,
        clip: bool = False,
        data_range: tuple[float, float] = (-1.0, 1.0),
        final_std_max: float | None = None,
        cache_dir: str | None = None,
        estimator: cal.Estimator | str = cal.Estimator.RESIDUAL,
        **options: Any,
    ):
        super().__init__(*shared, variance=Variance.BETA_TILDE, **options)
        if isinstance(self.grid, OptimalTrajectory) and not self.denoise_final:
            raise ValueError(
                "solver/grid=optimal_trajectory needs denoise_final=true (its steps end at "
                "t_min, then x̂0)"
            )
        try:
            self.estimator = cal.Estimator(estimator)
        except ValueError:
            choices = tuple(e.value for e in cal.Estimator)
            raise ValueError(f"estimator={estimator!r} is not one of {choices}") from None
        self.mc_samples = check_int("mc_samples", mc_samples, 2)
        self.mc_batch = check_int("mc_batch", mc_batch, 1)
        self.mc_seed = check_int("mc_seed", mc_seed, 0)
        if not isinstance(clip, bool):
            raise ValueError(f"clip={clip!r} must be true or false")
        self.clip = clip
        self.data_range = check_range("data_range", data_range)
        if final_std_max is not None and not finite_float("final_std_max", final_std_max) >= 0:
            raise ValueError(f"final_std_max={final_std_max} must be >= 0 (or null: no cap)")
        self.final_std_max = None if final_std_max is None else float(final_std_max)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.calibration: cal.Calibration | None = None
        self._memory: dict[tuple, tuple[Any, Any, cal.Calibration]] = {}

    def noisy_times(self, sde: SDE) -> Tensor:
        """Where Γ_t is needed: the grid times that start a noisy step (all but the last two),
        or all candidates of an ``OptimalTrajectory`` but t_min."""
        if isinstance(self.grid, OptimalTrajectory):
            return self.grid.candidate_times(sde, self.t_min)[:-1]
        return super().time_grid(sde)[:-2]

    def time_grid(self, sde: SDE) -> Tensor:
        """The solver's times; on an ``OptimalTrajectory``, the steps − 1 noisy hops through its
        candidates that minimise Σ log(σ*²/β̃) (needs the calibration), then 0."""
        if not isinstance(self.grid, OptimalTrajectory) or self.steps == 1:
            return super().time_grid(sde)
        if self.steps - 1 > self.grid.candidates:
            raise ValueError(
                f"steps={self.steps} needs solver.grid.candidates >= {self.steps - 1} (one per "
                f"noisy step), got {self.grid.candidates}; or another grid (solver/grid=uniform)"
            )
        self.check_calibrated(sde)  # the programme takes a few ms: not worth keeping
        candidates = self.grid.candidate_times(sde, self.t_min)
        ms_eps = self.clipped_ms_eps(sde, candidates[:-1])
        cost = hop_costs(sde, candidates, lambda i, t, s: self.variances(sde, t, s, ms_eps[i]))
        path = candidates[cheapest_path(cost, self.steps - 1)]
        return torch.cat([path, torch.zeros(1).to(path)])

    def calibrate(
        self,
        sde: SDE,
        score_fn: ScoreCallable,
        data: cal.Data,
        source: str | None = None,
        default_cache_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> cal.Calibration:
        """Estimate Γ_t on ``data`` for this grid on ``sde`` (or find it cached) and keep it for
        the following calls. Cached in memory per (``source``, or the identity of ``score_fn``
        and ``data``, SDE, grid, M, seed, dtype); with a ``source`` name also on disk in
        ``cache_dir`` (else ``default_cache_dir``, if any)."""
        times = self.noisy_times(sde)
        key = cal.CalibrationKey.of(
            sde, times, source, self.mc_samples, self.mc_seed, dtype, self.estimator
        )
        memory_key = (source or (id(score_fn), id(data)), key.digest())
        if memory_key in self._memory:
            self.calibration = self._memory[memory_key][2].reused("memory")
            return self.calibration
        folder = self.cache_dir or default_cache_dir
        path = None
        if source is not None and folder is not None:
            what = "solver.cache_dir" if self.cache_dir else "calibration folder"
            check_writable(folder, what)  # before the estimate, which a failed save would lose
            path = cal.cache_path(folder, key, "analytic_dpm")
        found = None if path is None else cal.load(path, key)
        if found is None:
            found = cal.estimate_ms_eps(
                sde, score_fn, data, key, self.mc_batch, dtype, device, self.progress
            )
            if path is not None:
                cal.save(path, found)
        self._memory[memory_key] = (score_fn, data, found)  # holds both: their ids stay theirs
        self.calibration = found
        return found

    def check_calibrated(self, sde: SDE) -> cal.Calibration:
        """The calibration for this grid on ``sde``, else a ValueError saying what to do."""
        c = self.calibration
        if c is None:
            raise ValueError(
                "AnalyticDPM needs Γ_t = E‖ε_θ‖²/d from data: call solver.calibrate(sde, "
                "score_fn, data) before sampling (sde-gen-sample does it with the score's data)"
            )
        if not c.key.same_process(sde, self.noisy_times(sde)):
            raise ValueError(
                f"AnalyticDPM was calibrated for another grid or SDE than {sde!r} with "
                f"steps={self.steps}, {self.grid!r}: call solver.calibrate(sde, score_fn, data)"
            )
        return c

    def integrate(self, sde, score: ScoreFn, x_T, generator, keep, record) -> Tensor:
        self.check_calibrated(sde)  # before any evaluation
        return super().integrate(sde, score, x_T, generator, keep, record)

    def std(self, ctx: StepContext, t: float, s: float, v: Tensor | None) -> float:
        std = math.sqrt(self.step_variance(ctx, t, s))
        if self.final_std_max is not None and ctx.index == len(ctx.times) - 3:
            return min(std, self.final_std_max)  # the last noisy step
        return std

    def step_variance(self, ctx: StepContext, t: float, s: float) -> float:
        """σ*² of the step t → s from the calibrated Γ_t, clipped into Theorem 2's range."""
        t_, s_ = (torch.tensor([u], dtype=torch.float64) for u in (t, s))
        return float(self.variances(ctx.sde, t_, s_, self.clipped_ms_eps(ctx.sde, t_))[0])

    def clipped_ms_eps(self, sde: SDE, times: Tensor) -> Tensor:
        """The calibrated Γ_t at ``times`` (each a calibrated time), clipped into Theorem 2's
        range (``ms_eps_range``; with ``clip``, for data in ``data_range``)."""
        half_width = (self.data_range[1] - self.data_range[0]) / 2 if self.clip else None
        c = sde.coefficients(times)
        out = []
        for t, gamma, sigma in zip(times.tolist(), c.gamma.tolist(), c.sigma.tolist(), strict=True):
            low, high = ms_eps_range(gamma, sigma, half_width)
            out.append(min(max(self.calibration.at(t), low), high))
        return torch.tensor(out, dtype=torch.float64)

    def variances(self, sde: SDE, t: Tensor, s: Tensor, ms_eps: Tensor) -> Tensor:
        """σ*² (``optimal_variance``, λ² = β̃) of the steps t → s, elementwise, given Γ_t."""
        gamma_ts, _ = sde.transition(s, t)
        lambda2 = sde.posterior(s, t)[2]
        sigma_t2, sigma_s2 = sde.sigma(t) ** 2, sde.sigma(s) ** 2
        return optimal_variance(lambda2, sigma_t2, sigma_s2, gamma_ts**2, ms_eps)

    def step_variances(self, sde: SDE) -> Tensor:
        """σ*² of every noisy step of the grid on ``sde`` (float64), in sampling order."""
        self.check_calibrated(sde)
        times = self.time_grid(sde)
        ctx = StepContext(sde, None, None, times, 0)  # coefficients only: no score, no noise
        grid = times.tolist()
        return torch.tensor(
            [self.step_variance(ctx, grid[i], grid[i + 1]) for i in range(len(grid) - 2)],
            dtype=torch.float64,
        )
