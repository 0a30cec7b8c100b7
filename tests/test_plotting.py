"""Every plot writes a non-empty PNG whose pixels depend on its input (Agg backend)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from sde_gen import plotting
from sde_gen.data import ring_mixture
from sde_gen.sde import VESDE, VPSDE


def _pixels(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    return mpimg.imread(path)


def _differ(a, b) -> bool:
    pa, pb = _pixels(a), _pixels(b)
    return pa.shape != pb.shape or float(np.abs(pa - pb).max()) > 0.1


def _paths(gen, sde, n=40, k=20, shape=(2,)):
    times = torch.linspace(sde.T, 1e-3, k + 1, dtype=torch.float64)
    x0 = torch.randn(n, *shape, generator=gen, dtype=torch.float64).clamp(-1, 1)
    traj = torch.stack(
        [sde.marginal_sample(x0, torch.full((n,), float(t), dtype=torch.float64)) for t in times]
    )
    return traj, times


def test_reverse_trajectories_depend_on_paths(tmp_path, gen):
    sde, mix = VPSDE(), ring_mixture()
    dens = plotting.mixture_density(mix, sde)
    traj, times = _paths(gen, sde)
    a = plotting.plot_reverse_trajectories(traj, times, tmp_path / "a.png", log_density=dens)
    b = plotting.plot_reverse_trajectories(2 * traj, times, tmp_path / "b.png", log_density=dens)
    assert _differ(a, b)
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_reverse_trajectories(traj[..., :1], times, tmp_path / "c.png")


def test_scatter_and_forward_2d_depend_on_data(tmp_path, gen):
    sde, mix = VPSDE(), ring_mixture()
    dens = plotting.mixture_density(mix, sde)
    x = mix.sample(200, gen)
    a = plotting.plot_scatter(x, tmp_path / "a.png", log_density=dens)
    b = plotting.plot_scatter(x + 1.0, tmp_path / "b.png", log_density=dens)
    assert _differ(a, b)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    c = plotting.plot_forward_2d(x, sde, [0.0, 0.5], tmp_path / "c.png", dens, generator=g1)
    d = plotting.plot_forward_2d(0.3 * x, sde, [0.0, 0.5], tmp_path / "d.png", dens, generator=g2)
    assert _differ(c, d)


def test_mixture_density_is_exact_q_t():
    sde, mix = VPSDE(), ring_mixture(num_modes=1, radius=0.0, std=0.5)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    t = 0.4
    var = (
        float(sde.gamma(torch.tensor([t], dtype=torch.float64))) ** 2 * 0.25
        + float(sde.sigma(torch.tensor([t], dtype=torch.float64))) ** 2
    )
    expected = -0.5 * (x**2).sum() / var - np.log(2 * np.pi * var)
    assert float(plotting.mixture_density(mix, sde)(x, t)) == pytest.approx(float(expected))


def test_image_plots_depend_on_images(tmp_path, gen):
    sde = VPSDE()
    x = torch.rand(6, 1, 8, 8, generator=gen) * 2 - 1
    a = plotting.plot_image_grid(x, tmp_path / "a.png")
    b = plotting.plot_image_grid(-x, tmp_path / "b.png")
    assert _differ(a, b)
    traj, times = _paths(gen, sde, n=3, k=10, shape=(1, 8, 8))
    c = plotting.plot_denoising_strip(traj, times, tmp_path / "c.png")
    d = plotting.plot_denoising_strip(-traj, times, tmp_path / "d.png")
    assert _differ(c, d)
    e = plotting.plot_forward_images(x, sde, [0.0, 0.3], tmp_path / "e.png", generator=gen)
    f = plotting.plot_forward_images(-x, sde, [0.0, 0.3], tmp_path / "f.png", generator=gen)
    assert _differ(e, f)


def test_tile_images_places_each_image():
    imgs = np.arange(5, dtype=np.float64).reshape(5, 1, 1, 1) / 4 * np.ones((5, 2, 3, 1))
    mosaic = plotting.tile_images(imgs, ncol=2, pad=1)
    assert mosaic.shape == (3 * 3 + 1, 2 * 4 + 1, 1)
    for k in range(5):
        r, q = divmod(k, 2)
        block = mosaic[1 + 3 * r : 1 + 3 * r + 2, 1 + 4 * q : 1 + 4 * q + 3]
        assert np.all(block == k / 4)
    assert np.all(mosaic[1 + 6 : 3 + 6, 5:8] == 1.0)  # the empty sixth cell stays white


def test_weighting_curves_depend_on_sde(tmp_path):
    a = plotting.plot_weighting_curves(VPSDE(), tmp_path / "a.png")
    b = plotting.plot_weighting_curves(VESDE(), tmp_path / "b.png")
    assert _differ(a, b)


def test_time_density_is_normalised_and_matches_closed_forms():
    """r ∝ λ/σ²: uniform for λ = σ²; for λ = g² on the VP SDE, r ∝ β/(1 − e^{−∫β})."""
    sde, t_min = VPSDE(), 1e-3
    t = torch.linspace(t_min, 1.0, 20001, dtype=torch.float64)
    w = plotting.standard_weightings()
    r_sigma = plotting.time_density(sde, w["sigma2"], t)
    assert torch.allclose(r_sigma, torch.full_like(t, 1 / (1 - t_min)), rtol=1e-6)
    r_lik = plotting.time_density(sde, w["likelihood"], t)
    assert float(torch.trapezoid(r_lik, t)) == pytest.approx(1.0, abs=1e-12)
    int_beta = 0.1 * t + 0.5 * 19.9 * t**2
    g2_over_s2 = (0.1 + 19.9 * t) / -torch.expm1(-int_beta)
    ratio = r_lik / g2_over_s2
    assert float(ratio.max() / ratio.min()) == pytest.approx(1.0, abs=1e-9)
    # g²/σ² = −d log SNR/dt, so the normaliser is log SNR(t_min) − log SNR(T)
    ends = torch.tensor([t_min, 1.0], dtype=torch.float64)
    log_snr = sde.log_snr(ends)
    assert float(ratio[0]) == pytest.approx(1 / float(log_snr[0] - log_snr[1]), rel=1e-4)


def test_solver_comparison_depends_on_curves_and_floor(tmp_path):
    curves = {"em": ([10, 20, 40], [0.4, 0.2, 0.1]), "pf": ([10, 20, 40], [0.1, 0.02, 0.004])}
    a = plotting.plot_solver_comparison(curves, tmp_path / "a.png", floor=(1e-3, 3e-3))
    b = plotting.plot_solver_comparison(curves, tmp_path / "b.png", floor=(0.05, 0.2))
    c = plotting.plot_solver_comparison({"em": curves["em"]}, tmp_path / "c.png")
    assert _differ(a, b) and _differ(a, c)
    with pytest.raises(ValueError, match="floor"):
        plotting.plot_solver_comparison(curves, tmp_path / "d.png", floor=(0.2, 0.1))


def test_plots_return_figure_without_path():
    from matplotlib.figure import Figure

    fig = plotting.plot_scatter(np.zeros((3, 2)) + np.arange(3)[:, None])
    assert isinstance(fig, Figure)


def test_demo_saves_the_forward_figure(tmp_path):
    from hydra import compose, initialize_config_module

    from sde_gen.demo import forward_figure

    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        cfg = compose("demo", overrides=[f"out={tmp_path / 'demo.png'}", "n=200"])
        bad = compose("demo", overrides=["times=[0.0,1.5]"])
    assert _pixels(forward_figure(cfg)).shape[2] in (3, 4)
    with pytest.raises(ValueError, match=r"\[1.5\]"):
        forward_figure(bad)


def test_signed_metric_is_drawn_at_its_value_on_a_symlog_axis():
    """The unbiased MMD² is often < 0: its point sits at the negative value itself (never |v|),
    on a symlog axis whose linear band is the Monte Carlo floor, with the floor drawn as ±high."""
    curves = {"em": ([10, 20, 40], [0.3, 0.01, -0.002]), "heun": ([10, 20], [0.05, 0.001])}
    fig = plotting.plot_solver_comparison(curves, floor=(0.0, 0.004), title="t")
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog" and ax.get_xscale() == "log"
    assert ax.yaxis.get_transform().linthresh == pytest.approx(0.004)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["em"].get_xdata()) == [10, 20, 40]
    assert list(lines["em"].get_ydata()) == [0.3, 0.01, -0.002]
    band = next(p for p in ax.patches if p.get_label() == "Monte Carlo floor")
    ys = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]  # y in data units
    assert ys.min() == pytest.approx(-0.004) and ys.max() == pytest.approx(0.004)
    # unsorted NFE are drawn in NFE order; a positive-only metric keeps the log–log axes
    fig = plotting.plot_solver_comparison({"em": ([40, 10], [0.1, 0.4])})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert list(ax.get_lines()[0].get_ydata()) == [0.4, 0.1]
    with pytest.raises(ValueError, match="linthresh"):
        plotting.plot_solver_comparison(curves, linthresh=0.0)


def test_signed_linthresh_is_the_floor_else_within_three_decades():
    v = np.array([-1e-7, 2e-2, 0.5, 0.0])
    assert plotting.signed_linthresh(v, 0.03) == 0.03
    assert plotting.signed_linthresh(v) == pytest.approx(1e-3 * 0.5)  # 1e-7 is below 1e-3·max
    assert plotting.signed_linthresh(np.array([-0.2, 0.05])) == pytest.approx(0.05)
    assert plotting.signed_linthresh(np.zeros(3)) == 1.0


def test_run_title_names_solver_steps_weighting_and_metric_with_floor():
    run = {"solver": "ddim", "steps": 3, "nfe": 3, "weighting": "likelihood", "mmd2": -0.0556,
           "mmd2_floor": 0.0643, "nll_gap": 0.25, "loss": 1.0}  # fmt: skip
    title = plotting.run_title(run, head="samples")
    assert title.splitlines() == [
        "samples",
        "solver ddim, steps 3, NFE 3, weighting likelihood",
        "mmd2 = -0.0556 ± 0.064; nll_gap = 0.25",
    ]
    assert plotting.run_title({"solver": "pf_ode", "mmd2": float("nan")}) == "solver pf_ode"
    rows = [{"solver": s, "steps": k, "mmd2": 0.1} for s in ("heun", "ddim") for k in (8, 2)]
    assert plotting.sweep_title(rows, "mmd2", 0.02).splitlines() == [
        "mmd2 vs NFE (Monte Carlo floor ± 0.02)",
        "solver ddim, heun, steps 2, 8",
    ]


def test_every_plot_shows_its_title(gen):
    """Each plotting function puts ``title`` on the figure (suptitle or its single axes)."""
    sde, mix = VPSDE(), ring_mixture()
    x = mix.sample(50, gen)
    traj, times = _paths(gen, sde, n=5, k=4)
    img = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    itraj, itimes = _paths(gen, sde, n=2, k=4, shape=(1, 8, 8))
    figs = {
        "scatter": plotting.plot_scatter(x, title="T scatter"),
        "reverse": plotting.plot_reverse_trajectories(traj, times, title="T reverse"),
        "forward_2d": plotting.plot_forward_2d(x, sde, [0.0, 0.5], title="T forward_2d"),
        "grid": plotting.plot_image_grid(img, title="T grid"),
        "strip": plotting.plot_denoising_strip(itraj, itimes, title="T strip"),
        "forward_images": plotting.plot_forward_images(img, sde, [0, 1], title="T forward_images"),
        "weighting": plotting.plot_weighting_curves(sde, title="T weighting"),
        "comparison": plotting.plot_solver_comparison({"a": ([1], [1.0])}, title="T comparison"),
    }
    for name, fig in figs.items():
        texts = [ax.get_title() for ax in fig.axes]
        texts += [fig._suptitle.get_text()] if fig._suptitle is not None else []
        assert f"T {name}" in texts, (name, texts)
    assert figs["reverse"].axes[0].get_title() == "reverse trajectories"
    assert plotting.plot_scatter(x).axes[0].get_title() == "samples"


def test_many_nfe_values_get_plain_ticks_at_1_2_5_and_the_floor_its_label():
    """More than ``MAX_NFE_TICKS`` distinct NFE (adaptive solvers' actual counts): ticks at
    1, 2, 5 × 10^k inside the data range, written as plain numbers; ``floor_label`` is the
    band's legend entry."""
    nfe = [5, 7, 9, 12, 14, 20, 26, 38, 56, 74, 100, 300, 692]
    curves = {"pf": (nfe, [1.0 / n for n in nfe])}
    fig = plotting.plot_solver_comparison(curves, floor=(1e-4, 1e-3), floor_label="band X")
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert shown == ["5", "10", "20", "50", "100", "200", "500"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pf", "band X"]
