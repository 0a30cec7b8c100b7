"""Curves: the schedule of an SDE with what a loss weighting λ(t) makes of it, and the
error-vs-NFE comparison of solvers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from sde_gen.losses.weighting import WEIGHTINGS, Weighting
from sde_gen.plotting._common import PathLike, axes_or_figure, finish, new_figure, to_numpy
from sde_gen.sde import SDE

__all__ = [
    "standard_weightings",
    "time_density",
    "plot_weighting_curves",
    "plot_solver_comparison",
]


def standard_weightings() -> dict[str, Weighting]:
    """The loss module's λ(t): σ_t² (ε-prediction, L_simple), g(t)² (likelihood weighting,
    Song et al. 2021b) and 1 (plain score matching), by their config names."""
    return {name: cls() for name, cls in WEIGHTINGS.items()}


def time_density(sde: SDE, weighting: Weighting, t: Tensor) -> Tensor:
    """r(t) ∝ λ(t)/σ_t² on the increasing grid ``t``, normalised by the trapezoid rule: the
    importance density under which the loss λ/σ² ‖ε − ε_θ‖² has a uniform per-sample weight."""
    w = weighting(sde, t) / sde.sigma(t) ** 2
    return w / torch.trapezoid(w, t)


def plot_weighting_curves(
    sde: SDE,
    path: PathLike | None = None,
    weightings: Mapping[str, Weighting] | None = None,
    t_min: float = 1e-3,
    points: int = 400,
) -> Figure | Path:
    """Four panels on t ∈ [t_min, T]: γ_t and σ_t; SNR γ_t²/σ_t²; λ(t) of each weighting
    (normalised to max 1); r(t) ∝ λ/σ² (normalised to a density)."""
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min={t_min} must lie in (0, T={sde.T})")
    weightings = standard_weightings() if weightings is None else weightings
    t = torch.linspace(t_min, sde.T, points, dtype=torch.float64)
    tn = t.numpy()
    fig, axes = new_figure(4, 1, size=3.0)
    ax = axes[0, 0]
    ax.plot(tn, sde.gamma(t).numpy(), label=r"$\gamma_t$")
    ax.plot(tn, sde.sigma(t).numpy(), label=r"$\sigma_t$")
    ax.set(xlabel="t", title=f"{type(sde).__name__} marginal")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.semilogy(tn, torch.exp(sde.log_snr(t)).numpy())
    ax.set(xlabel="t", title=r"SNR $\gamma_t^2/\sigma_t^2$")
    for name, weighting in weightings.items():
        lam = weighting(sde, t).to(torch.float64)
        axes[0, 2].semilogy(tn, (lam / lam.max()).numpy(), label=name)
        axes[0, 3].semilogy(tn, time_density(sde, weighting, t).numpy(), label=name)
    axes[0, 2].set(xlabel="t", title=r"$\lambda(t)$ / max")
    axes[0, 3].set(xlabel="t", title=r"$r(t) \propto \lambda(t)/\sigma_t^2$")
    axes[0, 2].legend(fontsize=8)
    axes[0, 3].legend(fontsize=8)
    return finish(fig, path)


def plot_solver_comparison(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: PathLike | None = None,
    ax: Axes | None = None,
    floor: tuple[float, float] | None = None,
    ylabel: str = "error",
    title: str = "error vs NFE",
) -> Figure | Path:
    """Error against NFE on log–log axes, one curve per solver; ``floor`` = (low, high) draws the
    Monte Carlo floor (the metric between exact sample sets) as a band; low = 0 draws it from
    below the smallest plotted error."""
    if not curves:
        raise ValueError("curves is empty: give {solver name: (nfe list, error list)}")
    fig, ax = axes_or_figure(ax)
    smallest = np.inf
    for name, (nfe, err) in curves.items():
        nfe_a, err_a = to_numpy(np.asarray(nfe), "nfe"), to_numpy(np.asarray(err), "error")
        if nfe_a.shape != err_a.shape or nfe_a.ndim != 1:
            raise ValueError(f"{name}: nfe shape {nfe_a.shape} != error shape {err_a.shape}")
        order = np.argsort(nfe_a)
        ax.loglog(nfe_a[order], np.abs(err_a[order]), "o-", label=name, markersize=4)
        positive = np.abs(err_a)[np.abs(err_a) > 0]
        smallest = min(smallest, positive.min()) if positive.size else smallest
    if floor is not None:
        low, high = floor
        if not 0 <= low <= high:
            raise ValueError(f"floor=({low}, {high}) must satisfy 0 <= low <= high")
        if low <= 0:  # a floor from 0: draw it from below the smallest plotted value
            low = min(smallest, high) / 3 if np.isfinite(smallest) else high / 10
        ax.axhspan(low, high, color="grey", alpha=0.25, label="Monte Carlo floor")
    ax.set(xlabel="NFE", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return finish(fig, path)
