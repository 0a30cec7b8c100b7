"""The score function with its SDE: the one place that evaluates ∇log q_t(x), counts and checks.

Solvers, the likelihood, its priors and grid fitting all call the score through ``ScoreFn``: one
evaluation of the whole batch at one time is one NFE, every output is checked for shape and
finiteness, and the conversions of the score (ε̂ = −σ_t s, Tweedie's x̂0 = (x + σ_t² s)/γ_t,
survey §4.3) are taken from ``sde.conversions`` here, once. A solver may give it one known
first answer (``start_from``: x̂0 at t = T, calibrated beforehand), which costs no evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sde_gen.runtime.progress import progress_bar
from sde_gen.sde.base import SDE, expand_as
from sde_gen.sde.conversions import eps_from_score, score_from_x0, x0_from_score
from sde_gen.sde.coordinates import coefficients_at

__all__ = ["ScoreCallable", "ScoreFn"]

ScoreCallable = Callable[[Tensor, Tensor], Tensor]
"""score_fn(x, t) with x of shape (B, ...) and t of shape (B,): ∇_x log q_t(x), shaped like x."""


class ScoreFn:
    """A score function with its SDE: counts evaluations, checks finiteness, and gives the
    conversions once.

    ``nfe`` counts calls (each is one evaluation of the batch); ``progress`` shows them in a bar.
    """

    def __init__(self, score_fn: ScoreCallable, sde: SDE, progress: bool | None = None):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable, got {type(score_fn).__name__}")
        self.score_fn, self.sde = score_fn, sde
        self.nfe = 0
        self.bar = progress_bar(unit=" evaluations", desc="score") if progress else None
        self._coefs: dict[float, tuple[float, float]] = {}
        self.start: tuple[float, Tensor] | None = None

    def start_from(self, t: float, x0: Tensor) -> None:
        """Answer the next call, which must be at time ``t``, with the score of x̂0 = ``x0``
        (broadcast over the batch) instead of evaluating ``score_fn``; it is not counted."""
        self.start = (float(t), x0)

    @classmethod
    def of(cls, score_fn: ScoreCallable, sde: SDE) -> ScoreFn:
        """``score_fn`` itself if it already is a ScoreFn for ``sde``, else a new one around it."""
        if isinstance(score_fn, ScoreFn) and score_fn.sde is sde:
            return score_fn
        return cls(score_fn, sde)

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        """∇log q_t(x): one counted evaluation; a ValueError naming t for a wrong shape or a
        non-finite value."""
        if self.start is not None:
            return self._from_start(x, t)
        t_vec = self._count(x, t)
        return _checked(self.score_fn(x, t_vec), x, t_vec, "score_fn")

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        """ε̂ = −σ_t ∇log q_t(x) (``conversions.eps_from_score``): one evaluation."""
        return eps_from_score(self(x, t), self._gamma_sigma(x, t)[1])

    def x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Tweedie's x̂0 = (x + σ_t² ∇log q_t(x))/γ_t (``conversions.x0_from_score``): one
        evaluation."""
        gamma, sigma = self._gamma_sigma(x, t)
        return x0_from_score(x, self(x, t), gamma, sigma)

    def eps_and_extra(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(ε_θ(x, t), v) of a learned-variance model (``ScoreModel.eps_and_extra``): one
        evaluation; a ValueError when ``score_fn`` has no learned variance."""
        if self.start is not None:
            raise ValueError("a known first answer gives x̂0, not a learned variance's output")
        name = type(self.score_fn).__name__
        model = getattr(self.score_fn, "eps_and_extra", None)
        if model is None:
            raise ValueError(
                f"variance='learned' needs a model with a learned variance (a ScoreModel whose "
                f"network has learn_variance=true), got score_fn={name}"
            )
        t_vec = self._count(x, t)
        eps, v = model(x, t_vec)
        if v is None:
            raise ValueError(f"variance='learned': {name} has no variance output (learn_variance)")
        return _checked(eps, x, t_vec, "ε_θ"), _checked(v, x, t_vec, "v")

    def log_variance(self, v: Tensor, log_beta: float, log_beta_tilde: float, t: float) -> Tensor:
        """log Σ of the step from t of a learned-variance model: its own convention
        (``ScoreModel.variance``, ``models.learned_variance``) applied to its extra output v and
        the step's log β, log β̃; a ValueError naming t when the convention refuses v."""
        convention = getattr(self.score_fn, "variance", None)
        if convention is None:
            name = type(self.score_fn).__name__
            raise ValueError(f"variance='learned': {name} has no learned-variance convention")
        try:
            return convention.log_variance(v, log_beta, log_beta_tilde)
        except ValueError as e:
            raise ValueError(f"at t={float(t):.6g}: {e}") from None

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self.bar is not None:
            self.bar.close()

    def _from_start(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The score (γ_t m − x)/σ_t² of the known x̂0 = m at the start time (``start_from``);
        a ValueError when this first call is at another time."""
        t_start, m = self.start
        self.start = None
        times = t.flatten().tolist() if isinstance(t, Tensor) else [float(t)]
        if any(u != t_start for u in times):
            raise ValueError(
                f"the known first answer is for t={t_start:.6g}, but the first score call is at "
                f"t={times[0]:.6g}: this solver does not start at T (use first_eval='model')"
            )
        gamma, sigma = self._gamma_sigma(x, t_start)
        return score_from_x0(x, m.to(device=x.device, dtype=x.dtype).expand_as(x), gamma, sigma)

    def _count(self, x: Tensor, t: Tensor | float) -> Tensor:
        """One more evaluation at t, as a vector of shape (B,) in x's dtype and device."""
        if isinstance(t, Tensor) and t.ndim == 1:
            t_vec = t.to(device=x.device, dtype=x.dtype)
        else:
            t_vec = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        self.nfe += 1
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(t=f"{float(t_vec[0]) if len(t_vec) else 0:.4g}", refresh=False)
        return t_vec

    def _gamma_sigma(self, x: Tensor, t: Tensor | float) -> tuple[Any, Any]:
        """(γ_t, σ_t): float64 floats at one time (kept per time), else tensors broadcast to x."""
        if isinstance(t, Tensor) and t.ndim == 1:
            c = self.sde.coefficients(t.to(torch.float64))
            gamma, sigma = (expand_as(v.to(device=x.device, dtype=x.dtype), x) for v in c[2:])
            return gamma, sigma
        t = float(t)
        if t not in self._coefs:
            c = coefficients_at(self.sde, t)
            self._coefs[t] = (c.gamma, c.sigma)
        return self._coefs[t]

    def __repr__(self) -> str:
        return f"ScoreFn({self.score_fn!r}, {self.sde!r})"


def _checked(out: Any, x: Tensor, t_vec: Tensor, name: str) -> Tensor:
    """``out`` if it is a finite tensor shaped like x, else a ValueError naming t."""
    t_show = float(t_vec[0]) if t_vec.numel() else float("nan")
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        expected = tuple(x.shape)
        raise ValueError(f"{name} at t={t_show:.6g} returned shape {got}, expected {expected}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"{name} at t={t_show:.6g} returned NaN or inf "
            f"(a non-finite score of shape {tuple(out.shape)} at t={t_show:.6g})"
        )
    return out
