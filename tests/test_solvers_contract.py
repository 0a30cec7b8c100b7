"""The solver contract: configs, seeds, records, exact NFE, grids and errors at the boundary."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sde_gen.data import GaussianMixture
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE
from sde_gen.solvers import (
    DDIM,
    PFODE,
    Ancestral,
    DPMSolver,
    EulerMaruyama,
    Heun,
    PredictorCorrector,
    ScipyODE,
    TorchsdeODE,
    TorchsdeSolver,
)
from sde_gen.solvers.grids import KarrasGrid, LogSNRGrid, QuadraticGrid, UniformGrid, make_grid

F64 = torch.float64


CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf" / "solver"
CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))
MU = torch.tensor([[1.0, -0.5]], dtype=F64)
S = 0.5
# few steps: enough to keep every solver within 0.25 of the data mean on N(μ, 0.5² I)
SMALL = {"steps": 40}


def data() -> GaussianMixture:
    return GaussianMixture([1.0], MU, S)


def load(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in overrides.items():
        if key in cfg:
            cfg[key] = value
    if "backend" in cfg and "steps" in cfg.backend:
        cfg.backend.steps = overrides.get("steps", cfg.backend.steps)
    return hydra.utils.instantiate(cfg)


def x_T(sde, n: int = 400, seed: int = 0) -> torch.Tensor:
    return sde.prior_sample((n, 2), torch.Generator().manual_seed(seed), dtype=F64)


def test_config_names():
    assert set(CONFIGS) >= {
        "ancestral",
        "euler_maruyama",
        "pc",
        "pf_ode",
        "pf_ode_torchsde",
        "torchsde",
        "ddim",
        "heun",
        "dpm_solver",
    }


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_every_config_samples_the_data_mean(name, sde):
    """Each yaml instantiates and, with 40 steps, draws samples whose mean is μ within 0.25
    (4 SE of the sample mean is 0.1) and whose std is s = 0.5 within 0.15."""
    solver = load(name, **SMALL)
    res = solver(sde, data().score_fn(sde), x_T(sde), generator=torch.Generator().manual_seed(1))
    assert res.x0.shape == (400, 2) and res.x0.dtype == F64
    assert (res.x0.mean(0) - MU[0]).abs().max() < 0.25, res.x0.mean(0)
    assert (res.x0.std(0) - S).abs().max() < 0.15, res.x0.std(0)
    assert res.nfe >= 40


@pytest.mark.parametrize("name", CONFIGS)
def test_seed_and_record(name):
    """Same seed → same samples; record=True changes nothing but the record."""
    sde = VPSDE()
    solver = load(name, steps=6)
    score = data().score_fn(sde)
    xt = x_T(sde, n=16)
    a = solver(sde, score, xt, generator=torch.Generator().manual_seed(5))
    b = solver(sde, score, xt, generator=torch.Generator().manual_seed(5), record=True)
    assert torch.equal(a.x0, b.x0) and a.nfe == b.nfe
    assert a.times is None and a.trajectory is None
    assert b.trajectory.shape == (len(b.times), 16, 2)
    assert b.times[0] == sde.T and torch.equal(b.trajectory[0], xt)
    assert torch.equal(b.trajectory[-1], b.x0)
    assert (b.times[1:] < b.times[:-1]).all()


@pytest.mark.parametrize(
    "solver,nfe",
    [
        (EulerMaruyama(steps=10, denoise_final=False), 10),
        (EulerMaruyama(steps=10, denoise_final=True), 11),
        (Ancestral(steps=10), 10),
        (Ancestral(steps=10, denoise_final=False), 10),
        (Ancestral(steps=1), 1),
        (DDIM(steps=10, eta=0.5), 10),
        (Heun(steps=10), 19),
        (Heun(steps=10, euler_last=False, denoise_final=True), 21),
        (DPMSolver(steps=10, order=3), 10),
        (PredictorCorrector(steps=10, corrector_steps=2, denoise_final=True), 31),
        (TorchsdeSolver("euler", steps=10, denoise_final=False), 11),  # +1: torchsde's shape check
        (TorchsdeSolver("midpoint", steps=10, denoise_final=False), 21),
        (PFODE(TorchsdeODE("euler", steps=10)), 11),
    ],
    ids=lambda v: v if isinstance(v, int) else type(v).__name__,
)
def test_nfe_is_exact(solver, nfe):
    sde = VPSDE()
    calls = []

    def score(x, t):
        calls.append(t)
        return data().score(x, t, sde)

    res = solver(sde, score, x_T(sde, n=4), generator=torch.Generator().manual_seed(0))
    assert res.nfe == nfe == len(calls)
    assert all(t.shape == (4,) for t in calls)


def test_scipy_nfe_counts_every_drift_evaluation():
    sde = VPSDE()
    n = [0]

    def score(x, t):
        n[0] += 1
        return data().score(x, t, sde)

    res = PFODE(ScipyODE("RK45", 1e-6, 1e-6))(sde, score, x_T(sde, n=4))
    assert res.nfe == n[0] > 20


def _nan_score(x, t):
    return torch.full_like(x, math.nan)


def _bad_shape_score(x, t):
    return x[:, :1]


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_score_stops_with_a_clear_error(name):
    sde = VPSDE()
    solver = load(name, steps=4)
    with pytest.raises(ValueError, match=r"t=1 .*NaN"):
        solver(sde, _nan_score, x_T(sde, n=3))
    with pytest.raises(ValueError, match=r"t=1 returned shape \(3, 1\), expected \(3, 2\)"):
        solver(sde, _bad_shape_score, x_T(sde, n=3))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: EulerMaruyama(steps=0), "steps=0"),
        (lambda: EulerMaruyama(steps=2.5), "steps=2.5"),
        (lambda: DDIM(t_min=0.0), "t_min=0.0"),
        (lambda: DDIM(t_min=-1e-3), "t_min=-0.001"),
        (lambda: DDIM(eta=-0.1), "eta=-0.1"),
        (lambda: DPMSolver(order=4), "order=4"),
        (lambda: DPMSolver(order=1), "order=1"),
        (lambda: Heun(grid="cosine"), "grid='cosine'.*karras"),
        (lambda: Ancestral(variance="fixed"), "variance='fixed'"),
        (lambda: PredictorCorrector(snr=-1.0), "snr=-1.0"),
        (lambda: PredictorCorrector(corrector_steps=-1), "corrector_steps=-1"),
        (lambda: ScipyODE(method="Euler"), "method='Euler'.*RK45"),
        (lambda: ScipyODE(rtol=0.0), "rtol=0.0"),
        (lambda: TorchsdeODE(method="rk4"), "method='rk4'.*midpoint"),
        (lambda: TorchsdeSolver(method="rk4"), "method='rk4'.*euler"),
        (lambda: PFODE(record_points=1), "record_points=1"),
        (lambda: KarrasGrid(rho=0.0), "rho=0.0"),
    ],
)
def test_bad_options_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_t_min_beyond_T_and_bad_x_T_raise():
    sde = VPSDE()
    with pytest.raises(ValueError, match="t_min=2.0"):
        EulerMaruyama(t_min=2.0)(sde, data().score_fn(sde), x_T(sde, n=2))
    with pytest.raises(ValueError, match="x_T"):
        EulerMaruyama()(sde, data().score_fn(sde), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="x_T"):
        EulerMaruyama()(sde, data().score_fn(sde), torch.full((2, 2), math.nan))


# -- grids -----------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [UniformGrid(), QuadraticGrid(), LogSNRGrid(), KarrasGrid()])
@pytest.mark.parametrize(
    "sde", [VPSDE(), VESDE(), DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000))], ids=str
)
def test_grids_are_decreasing_from_T_to_t_min(grid, sde):
    times = grid(sde, 12, 1e-3)
    assert times.dtype == F64 and times.shape == (13,)
    assert times[0] == sde.T and times[-1] == 1e-3
    assert (times[1:] < times[:-1]).all()


def test_grid_formulas():
    sde = VPSDE()
    q = QuadraticGrid()(sde, 4, 0.2)
    assert torch.allclose(q, 0.2 + 0.8 * torch.tensor([1, 0.75, 0.5, 0.25, 0.0], dtype=F64) ** 2)
    lam = sde.log_snr(LogSNRGrid()(sde, 8, 1e-3))
    assert torch.allclose(lam.diff(), lam.diff()[0].expand(8), atol=1e-9)
    sig = torch.exp(-0.5 * sde.log_snr(KarrasGrid(rho=7.0)(sde, 8, 1e-3)))
    root = sig ** (1 / 7)
    assert torch.allclose(root.diff(), root.diff()[0].expand(8), atol=1e-9)
    assert isinstance(make_grid("logsnr"), LogSNRGrid)
    with pytest.raises(ValueError, match="steps=0"):
        UniformGrid()(sde, 0, 1e-3)


def test_dpm_solver_memory_is_per_call():
    """Multistep history lives in the call: two calls on the same solver agree."""
    sde = VPSDE()
    solver = DPMSolver(steps=8, order=3)
    xt = x_T(sde, n=5)
    a = solver(sde, data().score_fn(sde), xt).x0
    b = solver(sde, data().score_fn(sde), xt).x0
    assert torch.equal(a, b)


def test_float32_input_stays_float32():
    sde = VPSDE()
    xt = x_T(sde, n=8).float()
    score = data().score_fn(sde)
    for solver in (DDIM(steps=5), DPMSolver(steps=5), PFODE(ScipyODE(rtol=1e-4, atol=1e-4))):
        res = solver(sde, score, xt)
        assert res.x0.dtype == torch.float32 and torch.isfinite(res.x0).all()


@pytest.mark.parametrize("solver", [EulerMaruyama(steps=5), PFODE(), TorchsdeSolver(steps=5)])
def test_progress_bar_changes_nothing(solver, capsys):
    sde = VPSDE()
    xt = x_T(sde, n=4)
    quiet = solver(sde, data().score_fn(sde), xt, generator=torch.Generator().manual_seed(0))
    solver.progress = True
    loud = solver(sde, data().score_fn(sde), xt, generator=torch.Generator().manual_seed(0))
    solver.progress = False
    assert torch.equal(quiet.x0, loud.x0) and quiet.nfe == loud.nfe
    assert "/s" in capsys.readouterr().err  # tqdm's rate


def test_grid_override_by_name_from_the_command_line():
    """`solver.grid=karras` replaces the `_target_` node by a validated name."""
    cfg = OmegaConf.load(CONF / "dpm_solver.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["grid=karras", "steps=7"]))
    solver = hydra.utils.instantiate(cfg)
    assert isinstance(solver.grid, KarrasGrid) and solver.steps == 7
