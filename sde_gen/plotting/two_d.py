"""Plots of 2-D particles: reverse trajectories over q_t, sample scatter, the forward process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from sde_gen.plotting._common import (
    LogDensity,
    PathLike,
    axes_or_figure,
    check_points_2d,
    density_image,
    finish,
    forward_samples,
    limits_of,
    new_figure,
    to_numpy,
)
from sde_gen.sde import SDE

__all__ = ["plot_reverse_trajectories", "plot_scatter", "plot_forward_2d"]


def _nearest_indices(times: np.ndarray, wanted: Sequence[float]) -> list[int]:
    return [int(np.argmin(np.abs(times - w))) for w in wanted]


def plot_reverse_trajectories(
    trajectory: torch.Tensor | np.ndarray,
    times: torch.Tensor | np.ndarray,
    path: PathLike | None = None,
    log_density: LogDensity | None = None,
    panel_times: Sequence[float] | None = None,
    max_paths: int = 200,
    title: str | None = None,
) -> Figure | Path:
    """Reverse-time paths x_T → x_0 of 2-D particles, coloured by t, over the data density q_0,
    with the marginal particles at a few ``panel_times`` over q_t (exact when ``log_density`` is
    a mixture's, survey §4.3); ``title`` above the panels.

    ``trajectory`` has shape (K+1, B, 2) at ``times`` (K+1,), from T down to ~0.
    """
    traj, ts = to_numpy(trajectory, "trajectory"), to_numpy(times, "times")
    if traj.ndim != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (K+1, B, 2), got {traj.shape}")
    if ts.shape != (traj.shape[0],):
        raise ValueError(f"times shape {ts.shape} != (K+1,) = ({traj.shape[0]},)")
    if panel_times is None:
        panel_times = [float(ts[0]), 0.5 * float(ts[0]), 0.1 * float(ts[0]), float(ts[-1])]
    idx = _nearest_indices(ts, panel_times)
    fig, axes = new_figure(1 + len(idx), 1, size=3.2)
    lim = limits_of(traj[-1], traj[0])
    t_max = float(max(ts.max(), 1e-12))

    ax = axes[0, 0]
    if log_density is not None:
        density_image(ax, log_density, None, lim)
    paths = traj[:, :max_paths].transpose(1, 0, 2)  # (B, K+1, 2)
    segs = np.stack([paths[:, :-1], paths[:, 1:]], 2).reshape(-1, 2, 2)
    seg_t = np.tile(0.5 * (ts[:-1] + ts[1:]), paths.shape[0])
    lines = LineCollection(segs, array=seg_t, cmap="viridis", linewidths=0.6, alpha=0.7)
    lines.set_clim(0.0, t_max)
    ax.add_collection(lines)
    ax.scatter(paths[:, 0, 0], paths[:, 0, 1], s=4, c="tab:orange", label="$x_T$", zorder=3)
    ax.scatter(paths[:, -1, 0], paths[:, -1, 1], s=4, c="tab:red", label="$x_0$", zorder=3)
    fig.colorbar(lines, ax=ax, label="t", fraction=0.046)
    ax.set(xlim=lim[:2], ylim=lim[2:], title="reverse trajectories")
    ax.legend(loc="upper right", fontsize=7, markerscale=2)

    for k, i in enumerate(idx, start=1):
        ax = axes[0, k]
        if log_density is not None:
            density_image(ax, log_density, float(ts[i]), lim, cmap="Blues")
        ax.scatter(traj[i, :, 0], traj[i, :, 1], s=2, c="k", alpha=0.6)
        ax.set(xlim=lim[:2], ylim=lim[2:], title=f"t = {ts[i]:.3g}")
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def plot_scatter(
    x: torch.Tensor | np.ndarray,
    path: PathLike | None = None,
    ax: Axes | None = None,
    log_density: LogDensity | None = None,
    reference: torch.Tensor | np.ndarray | None = None,
    title: str | None = None,
) -> Figure | Path:
    """2-D samples as points, optionally over the data density and beside reference samples."""
    pts = to_numpy(x, "x")
    check_points_2d(pts, "x")
    ref = None if reference is None else to_numpy(reference, "reference")
    if ref is not None:
        check_points_2d(ref, "reference")
    fig, ax = axes_or_figure(ax)
    lim = limits_of(pts, *([ref] if ref is not None else []))
    if log_density is not None:
        density_image(ax, log_density, None, lim)
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="tab:blue", alpha=0.4, label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:red", alpha=0.6, label="samples")
    ax.set(xlim=lim[:2], ylim=lim[2:], title=title or "samples")
    if ref is not None:
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    return finish(fig, path)


def plot_forward_2d(
    x0: torch.Tensor | np.ndarray,
    sde: SDE,
    times: Sequence[float],
    path: PathLike | None = None,
    log_density: LogDensity | None = None,
    generator: torch.Generator | None = None,
    title: str | None = None,
) -> Figure | Path:
    """The forward process x_t = γ_t x0 + σ_t ε on 2-D data, one panel a time (survey §4.1),
    over the exact q_t when ``log_density`` is given; ``title`` above the panels."""
    x0_t = torch.as_tensor(to_numpy(x0, "x0"))
    check_points_2d(x0_t.numpy(), "x0")
    clouds = [xt.numpy() for xt in forward_samples(sde, x0_t, times, generator)]
    lim = limits_of(*clouds)
    fig, axes = new_figure(len(times), 1, size=2.8)
    for ax, t, pts in zip(axes[0], times, clouds):
        if log_density is not None:
            density_image(ax, log_density, float(t), lim, cmap="Blues")
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="k", alpha=0.5)
        ax.set(xlim=lim[:2], ylim=lim[2:], title=f"t = {float(t):.3g}")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return finish(fig, path)
