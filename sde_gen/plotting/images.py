"""Plots of image samples: a grid, the denoising strip x_T → x_0 (survey Figure 1), the forward
strip x_0 → x_T."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sde_gen.plotting._common import (
    PathLike,
    axes_or_figure,
    finish,
    forward_samples,
    images_to_unit,
    new_figure,
    to_numpy,
)
from sde_gen.sde import SDE

__all__ = ["tile_images", "plot_image_grid", "plot_denoising_strip", "plot_forward_images"]


def tile_images(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """(B, H, W, C) in [0, 1] → one (rows·(H+pad), ncol·(W+pad), C) mosaic on a white ground."""
    b, h, w, c = images.shape
    nrow = -(-b // ncol)
    out = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c))
    for k in range(b):
        r, q = divmod(k, ncol)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = images[k]
    return out


def _show(ax: Axes, mosaic: np.ndarray) -> None:
    if mosaic.shape[2] == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_image_grid(
    x: torch.Tensor | np.ndarray,
    path: PathLike | None = None,
    ax: Axes | None = None,
    ncol: int | None = None,
    title: str | None = None,
) -> Figure | Path:
    """Image samples (B, C, H, W) in [−1, 1] as one grid, under ``title``."""
    imgs = images_to_unit(to_numpy(x, "x"), "x")
    ncol = ncol or int(np.ceil(np.sqrt(len(imgs))))
    fig, ax = axes_or_figure(ax)
    _show(ax, tile_images(imgs, ncol))
    if title:
        ax.set_title(title)
    return finish(fig, path)


def _strip(
    columns: list[np.ndarray], labels: list[str], path: PathLike | None, title: str | None
) -> Figure | Path:
    """Rows = samples, columns = times; each column (B, C, H, W) in [−1, 1]."""
    fig, axes = new_figure(len(columns), 1, size=1.6)
    fig.set_figheight(1.6 * max(1, len(columns[0])) / 2 + 0.6)
    for ax, col, label in zip(axes[0], columns, labels):
        _show(ax, tile_images(images_to_unit(col), ncol=1))
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return finish(fig, path)


def plot_denoising_strip(
    trajectory: torch.Tensor | np.ndarray,
    times: torch.Tensor | np.ndarray,
    path: PathLike | None = None,
    at: Sequence[float] | None = None,
    max_rows: int = 4,
    title: str | None = None,
) -> Figure | Path:
    """The reverse process x_T → x_0 of image samples at chosen times (survey Figure 1).

    ``trajectory`` (K+1, B, C, H, W) at ``times`` (K+1,); ``at`` picks the nearest recorded times
    (default: six evenly spaced from T to the last); ``title`` above the strip.
    """
    traj, ts = to_numpy(trajectory, "trajectory"), to_numpy(times, "times")
    if traj.ndim != 5:
        raise ValueError(f"trajectory must have shape (K+1, B, C, H, W), got {traj.shape}")
    if ts.shape != (traj.shape[0],):
        raise ValueError(f"times shape {ts.shape} != (K+1,) = ({traj.shape[0]},)")
    at = list(np.linspace(ts[0], ts[-1], 6)) if at is None else list(at)
    idx = [int(np.argmin(np.abs(ts - a))) for a in at]
    labels = [f"t = {ts[i]:.3g}" for i in idx]
    return _strip([traj[i, :max_rows] for i in idx], labels, path, title)


def plot_forward_images(
    x0: torch.Tensor | np.ndarray,
    sde: SDE,
    times: Sequence[float],
    path: PathLike | None = None,
    generator: torch.Generator | None = None,
    max_rows: int = 4,
    title: str | None = None,
) -> Figure | Path:
    """The forward process x_t = γ_t x0 + σ_t ε on images, one column a time (survey §4.1).
    Columns are rescaled by the prior std so that VE noise stays visible; ``title`` above them."""
    x = torch.as_tensor(to_numpy(x0, "x0"))[:max_rows]
    images_to_unit(x.numpy(), "x0")
    cols = []
    for t, xt in zip(times, forward_samples(sde, x, times, generator), strict=True):
        tt = torch.tensor([float(t)], dtype=torch.float64)
        scale = float(torch.sqrt(sde.gamma(tt) ** 2 + sde.sigma(tt) ** 2))
        cols.append((xt / max(scale, 1.0)).numpy())
    return _strip(cols, [f"t = {float(t):.3g}" for t in times], path, title)
