"""Figures for researchers, on matplotlib's Agg backend (no display needed).

Each function takes arrays or tensors and either a ``path`` (the PNG is written and the path
returned) or nothing / an ``ax`` (the Figure is returned for further drawing), and a ``title``
that names the run (``run_title`` builds it from a run's summary). Signed metrics (the unbiased
MMD², the NLL gap) are drawn at their signed values on a symlog axis, never as |value|.
"""

from sde_gen.plotting._common import LogDensity, mixture_density
from sde_gen.plotting.curves import (
    plot_solver_comparison,
    plot_weighting_curves,
    signed_linthresh,
    standard_weightings,
    time_density,
)
from sde_gen.plotting.images import (
    plot_denoising_strip,
    plot_forward_images,
    plot_image_grid,
    tile_images,
)
from sde_gen.plotting.titles import SIGNED_METRICS, metric_text, run_title, sweep_title
from sde_gen.plotting.two_d import plot_forward_2d, plot_reverse_trajectories, plot_scatter

__all__ = [
    "LogDensity",
    "mixture_density",
    "plot_reverse_trajectories",
    "plot_scatter",
    "plot_forward_2d",
    "plot_image_grid",
    "plot_denoising_strip",
    "plot_forward_images",
    "tile_images",
    "plot_weighting_curves",
    "plot_solver_comparison",
    "standard_weightings",
    "time_density",
    "signed_linthresh",
    "SIGNED_METRICS",
    "metric_text",
    "run_title",
    "sweep_title",
]
