"""Shared plumbing of the plots: Agg figures, array conversion, saving, density grids."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sde_gen.data.gaussian_mixture import GaussianMixture  # noqa: E402
from sde_gen.sde import SDE  # noqa: E402

LogDensity = Callable[[torch.Tensor, float], torch.Tensor]
"""log q_t(x) for x of shape (B, 2) at one time t (``None`` time means the data density)."""

PathLike = str | os.PathLike


def to_numpy(x: torch.Tensor | np.ndarray, name: str = "x") -> np.ndarray:
    """A float64 NumPy copy of a tensor or array, rejecting NaN/inf."""
    arr = x.detach().cpu().to(torch.float64).numpy() if isinstance(x, torch.Tensor) else x
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def new_figure(ncols: int = 1, nrows: int = 1, size: float = 3.0) -> tuple[Figure, np.ndarray]:
    """A figure with an (nrows, ncols) array of axes, ``size`` inches per panel."""
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, layout="constrained"
    )
    return fig, axes


def axes_or_figure(ax: Axes | None, size: float = 4.0) -> tuple[Figure, Axes]:
    """The given Axes and its figure, or a new single-panel figure."""
    if ax is not None:
        return ax.figure, ax
    fig, axes = new_figure(1, 1, size)
    return fig, axes[0, 0]


def finish(fig: Figure, path: PathLike | None, dpi: int = 100) -> Figure | Path:
    """Save ``fig`` to ``path`` (PNG, parents created) and close it; without a path return it."""
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def mixture_density(mixture: GaussianMixture, sde: SDE | None = None) -> LogDensity:
    """log q_t(x) of a Gaussian mixture diffused by ``sde`` (exact, float64)."""

    def log_density(x: torch.Tensor, t: float | None) -> torch.Tensor:
        if t is None or sde is None or t <= 0:
            return mixture.log_prob(x)
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float64)
        return mixture.log_prob(x, tt, sde)

    return log_density


def density_image(
    ax: Axes,
    log_density: LogDensity,
    t: float | None,
    limits: tuple[float, float, float, float],
    resolution: int = 100,
    cmap: str = "Greys",
    levels: int = 12,
) -> None:
    """Filled contours of q_t (not its log) over ``limits`` = (x_lo, x_hi, y_lo, y_hi)."""
    x_lo, x_hi, y_lo, y_hi = limits
    xs = torch.linspace(x_lo, x_hi, resolution, dtype=torch.float64)
    ys = torch.linspace(y_lo, y_hi, resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    dens = torch.exp(log_density(pts, t).to(torch.float64)).reshape(resolution, resolution)
    ax.contourf(gx.numpy(), gy.numpy(), dens.numpy(), levels=levels, cmap=cmap)


def forward_samples(
    sde: SDE, x0: torch.Tensor, times, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """x_t = γ_t x0 + σ_t ε at each of ``times`` (float64), one fresh ε per time."""
    if len(times) == 0:
        raise ValueError("times must be a non-empty list of times in [0, T]")
    out = []
    for t in times:
        tt = torch.full((x0.shape[0],), float(t), dtype=torch.float64)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        out.append(sde.marginal_sample(x0.to(torch.float64), tt, noise))
    return out


def limits_of(*clouds: np.ndarray, pad: float = 0.1, clip: float = 10.0) -> tuple[float, ...]:
    """Square axis limits (x_lo, x_hi, y_lo, y_hi) around the central 99% of 2-D points."""
    pts = np.concatenate([c.reshape(-1, 2) for c in clouds], 0)
    lo = np.percentile(pts, 0.5, axis=0)
    hi = np.percentile(pts, 99.5, axis=0)
    centre, half = (lo + hi) / 2, float(np.max(hi - lo)) / 2 * (1 + pad) + 1e-6
    half = min(half, clip)
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def check_points_2d(x: np.ndarray, name: str) -> None:
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) for a 2-D plot, got {x.shape}")


def images_to_unit(x: np.ndarray, name: str = "images") -> np.ndarray:
    """(B, C, H, W) in [−1, 1] → (B, H, W, C) in [0, 1], clipped; C must be 1 or 3."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (B, C∈{{1,3}}, H, W), got {x.shape}")
    return np.clip((x.transpose(0, 2, 3, 1) + 1) / 2, 0, 1)
