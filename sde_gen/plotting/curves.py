"""Curves: the schedule of an SDE with what a loss weighting λ(t) makes of it, and the
error-vs-NFE comparison of solvers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from torch import Tensor

from sde_gen.losses.weighting import (
    LikelihoodWeighting,
    OnesWeighting,
    SigmaSquaredWeighting,
    Weighting,
)
from sde_gen.plotting._common import PathLike, axes_or_figure, finish, new_figure, to_numpy
from sde_gen.sde import SDE

__all__ = [
    "standard_weightings",
    "time_density",
    "plot_weighting_curves",
    "plot_solver_comparison",
    "signed_linthresh",
    "nfe_ticks",
]

MAX_NFE_TICKS = 12
"""Up to this many distinct NFE values each get a tick; more get ticks at 1, 2, 5 × 10^k."""


def standard_weightings() -> dict[str, Weighting]:
    """The loss module's λ(t): σ_t² (ε-prediction, L_simple), g(t)² (likelihood weighting,
    Song et al. 2021b) and 1 (plain score matching), labelled by their ``loss/weighting`` names."""
    return {
        "sigma2": SigmaSquaredWeighting(),
        "likelihood": LikelihoodWeighting(),
        "ones": OnesWeighting(),
    }


def time_density(sde: SDE, weighting: Weighting, t: Tensor) -> Tensor:
    """r(t) ∝ λ(t)/σ_t² on the increasing grid ``t``, normalised by the trapezoid rule: the
    importance density under which the loss λ/σ² ‖ε − ε_θ‖² has a uniform per-sample weight."""
    w = weighting.over_sigma2(sde, t)
    return w / torch.trapezoid(w, t)


def plot_weighting_curves(
    sde: SDE,
    path: PathLike | None = None,
    weightings: Mapping[str, Weighting] | None = None,
    t_min: float = 1e-3,
    points: int = 400,
    title: str | None = None,
) -> Figure | Path:
    """Four panels on t ∈ [t_min, T]: γ_t and σ_t; SNR γ_t²/σ_t²; λ(t) of each weighting
    (normalised to max 1); r(t) ∝ λ/σ² (normalised to a density); ``title`` above them all."""
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
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def signed_linthresh(values: np.ndarray, floor: float | None = None) -> float:
    """Half-width of the linear band of a symlog axis: the Monte Carlo floor when known (values
    inside it are indistinguishable from exact sampling), else the smallest non-zero |value|, but
    no less than 10⁻³ of the largest (three decades of log scale each side)."""
    if floor is not None and floor > 0:
        return float(floor)
    size = np.abs(values[np.isfinite(values)])
    if not (size > 0).any():
        return 1.0
    return float(max(size[size > 0].min(), 1e-3 * size.max()))


def nfe_ticks(ax: Axes, nfe: np.ndarray) -> None:
    """Plain-number ticks on the log NFE axis (``5, 10, 20``, never ``10¹``): at the NFE values
    themselves when there are at most ``MAX_NFE_TICKS`` of them, else at 1, 2, 5 × 10^k."""
    values = np.unique(nfe[np.isfinite(nfe) & (nfe > 0)])
    if 0 < values.size <= MAX_NFE_TICKS:
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_solver_comparison(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: PathLike | None = None,
    ax: Axes | None = None,
    floor: tuple[float, float] | None = None,
    ylabel: str = "error",
    title: str = "error vs NFE",
    linthresh: float | None = None,
    floor_label: str = "Monte Carlo floor",
) -> Figure | Path:
    """Error against NFE, one curve per solver, each value at its signed position: log–log when
    every error is positive, else a symlog y axis (linear within ±``linthresh``, default the
    floor's high end, see ``signed_linthresh``) with a line at 0.

    ``floor`` = (low, high) draws the Monte Carlo floor (the metric between exact sample sets) as
    a band; low = 0 draws it as ±high on a signed axis, and from below the smallest plotted
    error on a log axis; ``floor_label`` names it in the legend (say how it was computed). The
    NFE axis is logarithmic with plain-number ticks (``nfe_ticks``)."""
    if not curves:
        raise ValueError("curves is empty: give {solver name: (nfe list, error list)}")
    if floor is not None and not 0 <= floor[0] <= floor[1]:
        raise ValueError(f"floor=({floor[0]}, {floor[1]}) must satisfy 0 <= low <= high")
    if linthresh is not None and not linthresh > 0:
        raise ValueError(f"linthresh={linthresh} must be > 0")
    arrays = {}
    for name, (nfe, err) in curves.items():
        nfe_a, err_a = to_numpy(np.asarray(nfe), "nfe"), to_numpy(np.asarray(err), "error")
        if nfe_a.shape != err_a.shape or nfe_a.ndim != 1:
            raise ValueError(f"{name}: nfe shape {nfe_a.shape} != error shape {err_a.shape}")
        order = np.argsort(nfe_a)
        arrays[name] = (nfe_a[order], err_a[order])
    values = np.concatenate([err for _, err in arrays.values()])
    signed = bool((values <= 0).any())
    fig, ax = axes_or_figure(ax)
    for name, (nfe_a, err_a) in arrays.items():
        ax.plot(nfe_a, err_a, "o-", label=name, markersize=4)
    ax.set_xscale("log")
    nfe_ticks(ax, np.concatenate([nfe for nfe, _ in arrays.values()]))
    if signed:
        high = None if floor is None else floor[1]
        ax.set_yscale("symlog", linthresh=linthresh or signed_linthresh(values, high))
        ax.axhline(0.0, color="black", lw=0.6)
    else:
        ax.set_yscale("log")
    if floor is not None:
        low, high = floor
        if low <= 0 and signed:  # a floor from 0 on a signed axis: the band ±high around 0
            low = -high
        elif low <= 0:  # on a log axis: from below the smallest plotted value
            low = min(values.min(), high) / 3 if values.size else high / 10
        ax.axhspan(low, high, color="grey", alpha=0.25, label=floor_label)
    ax.set(xlabel="NFE", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return finish(fig, path)
