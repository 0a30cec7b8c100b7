"""The solver contract: configs, seeds, records, exact NFE, declared capabilities, grids and
errors at the boundary. Configs are composed through Hydra as ``sde-gen-sample`` composes them."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

import sde_gen.solvers as solvers
from sde_gen.data import GaussianMixture
from sde_gen.runtime.instantiate import group_objects
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE
from sde_gen.solvers import (
    DDIM,
    DEIS,
    DPM2,
    LMS,
    PFODE,
    PNDM,
    AdaptiveDPM,
    AdaptiveUniPC,
    Ancestral,
    DPMSolver,
    DPMSolverSinglestep,
    EDMStochastic,
    EulerMaruyama,
    FittedGrid,
    FixedStepSolver,
    Heun,
    OptimalTrajectory,
    PredictorCorrector,
    SASolver,
    ScipyODE,
    SDEDPMSolver,
    Solver,
    TorchsdeODE,
    TorchsdeSolver,
    UniPC,
)
from sde_gen.solvers.grids import KarrasGrid, LogSNRGrid, QuadraticGrid, TrailingGrid, UniformGrid

F64 = torch.float64


CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf" / "solver"
CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))
# the grids any fixed-step solver takes, found from the config group itself (fitted needs a
# file; optimal_trajectory is chosen by Analytic-DPM, tests/test_optimal_trajectory)
GRID_OBJECTS = {k: g for k, g in group_objects("solver/grid").items() if g.standalone}
GRIDS = sorted(GRID_OBJECTS)
MU = torch.tensor([[1.0, -0.5]], dtype=F64)
S = 0.5
# few steps: enough to keep every solver within 0.25 of the data mean on N(μ, 0.5² I)
SMALL = {"steps": 40}


def data() -> GaussianMixture:
    return GaussianMixture([1.0], MU, S)


def compose_sample(*overrides: str) -> DictConfig:
    """The ``sde-gen-sample`` config with these command-line overrides."""
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def load(name: str, steps: int | None = None):
    """conf/solver/<name>.yaml composed with its grid; ``steps`` goes where the config has it
    (``steps``, or ``backend.steps`` of a fixed-step ODE backend; adaptive ones have none)."""
    cfg = compose_sample(f"solver={name}").solver
    if steps is not None and "steps" in cfg:
        cfg.steps = steps
    elif steps is not None and "backend" in cfg and "steps" in cfg.backend:
        cfg.backend.steps = steps
    return hydra.utils.instantiate(cfg)


def ready(solver, sde):
    """A solver that needs data (Analytic-DPM: ``needs_data``) calibrated on the test's Gaussian
    with its exact score, as ``sde-gen-sample`` calibrates it on the score source's data."""
    if getattr(solver, "needs_data", False):
        solver.calibrate(sde, data().score_fn(sde), data().sample64)
    return solver


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
        "unipc",
    }


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_every_config_samples_the_data_mean(name, sde):
    """Each yaml instantiates and, with 40 steps, draws samples whose mean is μ within 0.25
    (4 SE of the sample mean is 0.1) and whose std is s = 0.5 within 0.15."""
    solver = ready(load(name, **SMALL), sde)
    res = solver(sde, data().score_fn(sde), x_T(sde), generator=torch.Generator().manual_seed(1))
    assert res.x0.shape == (400, 2) and res.x0.dtype == F64
    assert (res.x0.mean(0) - MU[0]).abs().max() < 0.25, res.x0.mean(0)
    assert (res.x0.std(0) - S).abs().max() < 0.15, res.x0.std(0)
    assert res.nfe >= 40


@pytest.mark.parametrize("name", CONFIGS)
def test_seed_and_record(name):
    """Same seed → same samples; record=True changes nothing but the record."""
    sde = VPSDE()
    solver = ready(load(name, steps=6), sde)
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
        (DPMSolver(steps=10, final_step="t_min", denoise_final=True), 11),
        (DDIM(steps=10, final_step="t_min", denoise_final=True), 11),
        (DDIM(steps=1), 1),
        (UniPC(steps=10, order=3), 10),
        (UniPC(steps=10, order=1, variant="bh1", final_step="t_min"), 10),
        (UniPC(steps=10, final_step="t_min", denoise_final=True), 11),
        (UniPC(steps=1), 1),
        (DEIS(steps=10, order=3), 10),
        (DEIS(steps=10, final_step="zero"), 10),
        (DEIS(steps=10, denoise_final=True), 11),
        (PNDM(steps=10), 10),
        (PNDM(steps=10, start="heun"), 11),
        (PNDM(steps=10, start="runge_kutta"), 19),
        (PNDM(steps=2, start="runge_kutta", denoise_final=True), 9),
        (PNDM(steps=10, final_step="zero"), 10),
        (LMS(steps=10), 10),
        (DPMSolverSinglestep(steps=10), 10),
        (SDEDPMSolver(steps=10, order=3), 10),
        (DPM2(steps=10), 19),
        (EDMStochastic(steps=10), 19),
        (SASolver(steps=10, predictor_order=3, corrector_order=3), 10),
        (SASolver(steps=10, final_step="t_min", denoise_final=True), 11),
        (EDMStochastic(steps=10, euler_last=False, denoise_final=True), 21),
        (DPM2(steps=10, eta=1.0, final_step="t_min", denoise_final=True), 21),
        (SDEDPMSolver(steps=10, final_step="t_min", denoise_final=True), 11),
        (DPMSolverSinglestep(steps=10, order=2, final_step="t_min", denoise_final=True), 11),
        (LMS(steps=10, order=2, final_step="t_min", denoise_final=True), 11),
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
    assert solver.expected_nfe() == nfe


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_spends_its_expected_nfe(name):
    """Fixed-step configs: the counted NFE equals ``expected_nfe()``; adaptive ones declare None."""
    sde = VPSDE()
    calls = []

    def score(x, t):
        calls.append(t)
        return data().score(x, t, sde)

    solver = ready(load(name, steps=6), sde)  # the calibration's evaluations are not sampling's
    res = solver(sde, score, x_T(sde, n=4), generator=torch.Generator().manual_seed(0))
    expected = solver.expected_nfe()
    assert res.nfe == len(calls)
    if isinstance(solver, FixedStepSolver):
        assert expected == res.nfe, (expected, res.nfe)
    if solver.adaptive:
        assert expected is None and solver.evals_per_step is None
    else:
        assert expected == res.nfe, (expected, res.nfe)
        assert expected >= 6 and solver.evals_per_step >= 1


@pytest.mark.parametrize("name", CONFIGS)
def test_stochastic_solvers_depend_on_the_seed_and_only_they(name):
    """Different generator seeds: different samples iff the solver declares ``stochastic``."""
    sde = VPSDE()
    solver = ready(load(name, steps=6), sde)
    score = data().score_fn(sde)
    xt = x_T(sde, n=8)
    a = solver(sde, score, xt, generator=torch.Generator().manual_seed(5)).x0
    b = solver(sde, score, xt, generator=torch.Generator().manual_seed(6)).x0
    if solver.stochastic:
        assert not torch.equal(a, b)
    else:
        assert torch.equal(a, b)


def _solver_classes() -> list[type]:
    """Every concrete solver class the package exports or a config of ``solver/`` names."""
    exported = {
        c
        for c in vars(solvers).values()
        if inspect.isclass(c) and issubclass(c, Solver) and not inspect.isabstract(c)
    }
    configured = {type(load(name)) for name in CONFIGS}
    return sorted(exported | configured, key=lambda c: c.__name__)


SOLVER_CLASSES = _solver_classes()


@pytest.mark.parametrize("cls", SOLVER_CLASSES, ids=lambda c: c.__name__)
def test_every_solver_class_declares_what_it_is(cls):
    assert isinstance(cls.order, int | float) and cls.order >= 1
    assert isinstance(cls.stochastic, bool) and isinstance(cls.adaptive, bool)
    assert cls.evals_per_step is None or cls.evals_per_step >= 1
    solver = cls()
    assert solver.adaptive == (solver.evals_per_step is None) == (solver.expected_nfe() is None)


FIXED_STEP_CLASSES = [c for c in SOLVER_CLASSES if issubclass(c, FixedStepSolver)]


@pytest.mark.parametrize("cls", FIXED_STEP_CLASSES, ids=lambda c: c.__name__)
def test_fixed_step_solvers_take_the_shared_options_from_the_base(cls):
    """steps, t_min, grid, denoise_final, progress are the base's, positional or by name; left
    out, each takes the class's declared default; a bad value is named by the base."""
    a = cls(7, 0.01, KarrasGrid(rho=5.0), False)
    b = cls(steps=7, t_min=0.01, grid=KarrasGrid(rho=5.0), denoise_final=False, progress=False)
    assert repr(a) == repr(b)
    assert (a.steps, a.t_min, a.grid.rho, a.denoise_final, a.progress) == (
        7,
        0.01,
        5.0,
        False,
        False,
    )
    d = cls()
    assert (d.steps, d.grid, d.denoise_final) == (
        cls.default_steps,
        cls.default_grid,
        cls.default_denoise_final,
    )
    with pytest.raises(ValueError, match="steps=0 must be an integer >= 1"):
        cls(0)


def test_declared_defaults():
    """The defaults each solver had as constructor arguments, now declared on the class."""
    steps = {DDIM: 50, DPMSolver: 20, UniPC: 20, Heun: 18, PredictorCorrector: 500}
    steps |= {Ancestral: 1000, solvers.AnalyticDPM: 100, EulerMaruyama: 50}
    assert {c: c().steps for c in steps} == steps
    assert [c().denoise_final for c in (PredictorCorrector, Ancestral, solvers.AnalyticDPM)] == [
        True
    ] * 3
    assert not any(c().denoise_final for c in (DDIM, DPMSolver, UniPC, Heun, EulerMaruyama))
    assert isinstance(solvers.AnalyticDPM().grid, OptimalTrajectory)


def test_declared_values():
    assert (EulerMaruyama.order, Heun.order, DDIM.order) == (1, 2, 1)
    assert DPMSolver(order=3).order == 3 and DPMSolver.order == 2
    assert PredictorCorrector(corrector_steps=2).evals_per_step == 3
    assert Heun.evals_per_step == 2 and not Heun.stochastic
    assert DDIM(eta=0.5).stochastic and not DDIM().stochastic
    assert PFODE().adaptive and not PFODE(TorchsdeODE("midpoint", 10)).adaptive
    assert PFODE(TorchsdeODE("midpoint", 10)).order == 2
    assert TorchsdeSolver("srk").evals_per_step == 10
    # UniPC-p: the corrector raises the predictor's order p by one (Zhao et al. 2023)
    assert UniPC(order=2).order == 3 and UniPC(order=3, corrector=False).order == 3
    assert UniPC.order == 3 and UniPC.evals_per_step == 1 and not UniPC.stochastic
    assert AdaptiveUniPC(order=2).order == 3 and AdaptiveDPM(order=2).order == 2
    assert AdaptiveUniPC.adaptive and AdaptiveDPM.evals_per_step is None
    # AB weights for equal steps: second order on unequal steps in ρ (tests/test_pndm.py)
    assert PNDM(order=4).order == 2 and PNDM(order=1).order == 1 and DEIS(order=3).order == 3
    with pytest.raises(TypeError, match="steps"):
        AdaptiveUniPC(steps=10)


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
    solver = ready(load(name, steps=4), sde)
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
        (lambda: Heun(grid="cosine"), "grid='cosine'.*KarrasGrid"),
        (lambda: Ancestral(variance="fixed"), "variance='fixed'"),
        (lambda: PredictorCorrector(snr=-1.0), "snr=-1.0"),
        (lambda: PredictorCorrector(corrector_steps=-1), "corrector_steps=-1"),
        (lambda: ScipyODE(method="Euler"), "method='Euler'.*RK45"),
        (lambda: ScipyODE(rtol=0.0), "rtol=0.0"),
        (lambda: TorchsdeODE(method="rk4"), "method='rk4'.*midpoint"),
        (lambda: TorchsdeSolver(method="rk4"), "method='rk4'.*euler"),
        (lambda: PFODE(record_points=1), "record_points=1"),
        (lambda: KarrasGrid(rho=0.0), "rho=0.0"),
        (lambda: UniPC(order=4), "order=4"),
        (lambda: UniPC(order=True), "order=True"),
        (lambda: UniPC(variant="bh3"), "variant='bh3'.*bh1"),
        (lambda: UniPC(corrector="yes"), "corrector='yes'"),
        (lambda: UniPC(final_step="end"), "final_step='end'.*zero"),
        (lambda: DDIM(final_step=0), "final_step=0"),
        (lambda: DPMSolver(denoise_final=True), "denoise_final=True needs final_step='t_min'"),
        (lambda: DDIM(denoise_final=True), "denoise_final=True needs final_step='t_min'"),
        (lambda: DEIS(order=4), "order=4"),
        (lambda: DEIS(lower_order_final="yes"), "lower_order_final='yes'"),
        (lambda: DEIS(final_step="zero", denoise_final=True), "denoise_final=True needs"),
        (lambda: PNDM(order=5), "order=5"),
        (lambda: LMS(order=0), "order=0"),
        (lambda: DPMSolverSinglestep(order=4), "order=4"),
        (lambda: SDEDPMSolver(order=0), "order=0"),
        (lambda: DPM2(eta=1.5), "eta=1.5"),
        (lambda: EDMStochastic(s_churn=-1.0), "s_churn=-1.0"),
        (lambda: SASolver(predictor_order=0), "predictor_order=0"),
        (lambda: SASolver(corrector_order=5), "orders 2, 5 must be <= 4"),
        (lambda: SASolver(tau=-1.0), "tau=-1.0"),
        (lambda: SASolver(tau_from=0.9, tau_to=0.1), "tau_from=0.9"),
        (lambda: EDMStochastic(s_tmin=2.0, s_tmax=1.0), "s_tmax=1.0 must be >= s_tmin=2.0"),
        (lambda: SDEDPMSolver(variant="heun"), "variant='heun'.*midpoint"),
        (lambda: DPMSolverSinglestep(lower_order_final=1), "lower_order_final=1"),
        (lambda: LMS(denoise_final=True), "denoise_final=True needs final_step='t_min'"),
        (lambda: PNDM(start="rk4"), "start='rk4'.*runge_kutta"),
        (lambda: AdaptiveUniPC(order=0), "order=0"),
        (lambda: AdaptiveUniPC(variant="b"), "variant='b'"),
        (lambda: AdaptiveDPM(order=1), "order=1"),
        (lambda: AdaptiveDPM(rtol=0.0), "rtol=0.0"),
        (lambda: AdaptiveDPM(theta=1.5), "theta=1.5"),
        (lambda: AdaptiveDPM(growth=1.0), "growth=1.0"),
        (lambda: AdaptiveUniPC(norm="l1"), "norm='l1'.*max"),
    ],
)
def test_bad_options_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_an_option_a_solver_cannot_use_is_rejected():
    with pytest.raises(TypeError, match="steps"):
        PFODE(steps=10)


def test_t_min_beyond_T_and_bad_x_T_raise():
    sde = VPSDE()
    with pytest.raises(ValueError, match="t_min=2.0"):
        EulerMaruyama(t_min=2.0)(sde, data().score_fn(sde), x_T(sde, n=2))
    with pytest.raises(ValueError, match="x_T"):
        EulerMaruyama()(sde, data().score_fn(sde), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="x_T"):
        EulerMaruyama()(sde, data().score_fn(sde), torch.full((2, 2), math.nan))


# -- grids -----------------------------------------------------------------------------------
def test_every_standalone_grid_class_has_a_config():
    """The five grids of ``grids.py`` are in the config group, so the tests below check them."""
    assert {type(g) for g in GRID_OBJECTS.values()} >= {
        UniformGrid,
        QuadraticGrid,
        LogSNRGrid,
        KarrasGrid,
        TrailingGrid,
    }


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize(
    "sde", [VPSDE(), VESDE(), DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000))], ids=str
)
def test_grids_are_decreasing_from_T_to_t_min(grid, sde):
    times = GRID_OBJECTS[grid](sde, 12, 1e-3)
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
    with pytest.raises(ValueError, match="steps=0"):
        UniformGrid()(sde, 0, 1e-3)


def test_trailing_grid_is_diffusers_trailing_spacing():
    """On the DDPM chain, t_i = round(N − i N/steps)/N: diffusers' "trailing" timesteps k with
    t = (k + 1)/N (999, 899, …, 99 for 10 of 1000 steps); uniform in t on a continuous SDE."""
    sde = DiscreteVPSDE(torch.linspace(1e-4, 0.02, 1000))
    times = TrailingGrid()(sde, 10, 1e-3)
    assert torch.allclose(times[:-1], torch.arange(10, 0, -1, dtype=F64) / 10) and times[-1] == 1e-3
    k = (TrailingGrid()(sde, 3, 1e-3)[:-1] * 1000).round() - 1
    assert k.tolist() == [999.0, 666.0, 332.0]  # numpy: round(arange(1000, 0, -1000/3)) − 1
    assert torch.allclose(
        TrailingGrid()(VPSDE(), 4, 1e-3), torch.tensor([1, 0.75, 0.5, 0.25, 1e-3], dtype=F64)
    )
    with pytest.raises(ValueError, match="non-decreasing"):
        TrailingGrid()(sde, 2000, 1e-3)


@pytest.mark.parametrize(
    "solver",
    [
        DDIM(steps=6),
        DPMSolver(steps=6, order=3),
        UniPC(steps=6, order=3),
        UniPC(steps=6, corrector=False),
        DEIS(steps=6, final_step="zero"),
        LMS(steps=6, order=1),
        DPMSolverSinglestep(steps=6),
    ],
    ids=["ddim", "dpm3", "unipc3", "unip2", "deis3", "lms1", "dpm_singlestep3"],
)
def test_final_step_zero_returns_x0_of_the_last_evaluation_for_free(solver):
    """final_step='zero' (the default): the grid ends at 0, the last step returns Tweedie's x̂0 of
    the state at t_{N−1}, the N evaluations are those of the N steps (no Tweedie step)."""
    sde = VPSDE()
    xt = x_T(sde, n=6)
    res = solver(sde, data().score_fn(sde), xt, record=True)
    times = solver.time_grid(sde)
    assert times[-1] == 0 and times[-2] > solver.t_min and res.times.tolist() == times.tolist()
    assert res.nfe == solver.expected_nfe() == 6
    t_last = torch.full((6,), float(times[-2]), dtype=F64)
    x_last = res.trajectory[-2]
    expect = sde.x0_from_score(x_last, t_last, data().score(x_last, t_last, sde))
    assert torch.allclose(res.x0, expect, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda **k: DPMSolver(order=3, **k),
        lambda **k: UniPC(order=3, **k),
        lambda **k: DDIM(**k),
        lambda **k: DPMSolverSinglestep(**k),
        lambda **k: DEIS(**k),
    ],
    ids=["dpm3", "unipc3", "ddim", "dpm_singlestep3", "deis3"],
)
@pytest.mark.parametrize("grid", [LogSNRGrid(), QuadraticGrid(), KarrasGrid()], ids=repr)
def test_final_step_zero_from_t_min_evaluates_last_at_t_min(make, grid):
    """final_step='zero_from_t_min': the N evaluations are the grid of N − 1 steps T … t_min, then
    the jump to 0 returns x̂0 of the state at t_min; N evaluations; and with N + 1 steps it is
    ``zero`` on the same N + 1 evaluation times."""
    sde = VPSDE()
    xt = x_T(sde, n=6)
    solver = make(steps=6, grid=grid, final_step="zero_from_t_min")
    res = solver(sde, data().score_fn(sde), xt, record=True)
    times = solver.time_grid(sde)
    assert torch.equal(times[:-1], grid(sde, 5, solver.t_min)) and times[-1] == 0
    assert res.nfe == solver.expected_nfe() == 6 and solver.ends_at_zero
    t_last = torch.full((6,), solver.t_min, dtype=F64)
    x_last = res.trajectory[-2]
    expect = sde.x0_from_score(x_last, t_last, data().score(x_last, t_last, sde))
    assert torch.allclose(res.x0, expect, atol=1e-12, rtol=0)
    one = make(steps=1, grid=grid, final_step="zero_from_t_min")
    assert one.time_grid(sde).tolist() == [sde.T, 0.0]
    assert one(sde, data().score_fn(sde), xt).nfe == 1


def test_final_step_zero_from_t_min_refuses_what_it_cannot_place():
    """A fitted grid (made for N steps, not N − 1), an adaptive solver (no grid) and a Tweedie
    step after the jump to 0 are refused, each naming the option."""
    sde = VPSDE()
    fitted = FittedGrid([1.0, 0.5, 0.1, 1e-3])
    with pytest.raises(ValueError, match="zero_from_t_min.*FittedGrid"):
        DPMSolver(steps=3, grid=fitted, final_step="zero_from_t_min").time_grid(sde)
    with pytest.raises(ValueError, match="zero_from_t_min"):
        AdaptiveUniPC(final_step="zero_from_t_min")
    with pytest.raises(ValueError, match="denoise_final=True needs final_step='t_min'"):
        DPMSolver(steps=3, final_step="zero_from_t_min", denoise_final=True)


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
    for solver in (
        DDIM(steps=5),
        DPMSolver(steps=5),
        UniPC(steps=5, order=3),
        PFODE(ScipyODE(rtol=1e-4, atol=1e-4)),
    ):
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


def test_grid_is_a_config_group_of_the_solver():
    """`solver/grid=<name>` switches the grid, `solver.grid.rho=5` tunes the Karras grid."""
    cfg = compose_sample("solver=dpm_solver", "solver/grid=karras", "solver.steps=7")
    solver = hydra.utils.instantiate(cfg.solver)
    assert isinstance(solver.grid, KarrasGrid) and solver.steps == 7
    solver = hydra.utils.instantiate(compose_sample("solver=heun", "solver/grid=logsnr").solver)
    assert isinstance(solver.grid, LogSNRGrid)
    solver = hydra.utils.instantiate(compose_sample("solver=heun", "solver.grid.rho=5").solver)
    assert isinstance(solver.grid, KarrasGrid) and solver.grid.rho == 5.0
    # a grid given by name is not a grid: the error names the value and the choices
    with pytest.raises(Exception, match="grid='karras'.*KarrasGrid"):
        hydra.utils.instantiate(compose_sample("solver=heun", "solver.grid=karras").solver)


@pytest.mark.parametrize("name", ["ddim", "heun", "euler_maruyama"])
def test_a_sweep_over_the_grid_group_composes_for_every_grid(name):
    """`-m solver/grid=uniform,quadratic,logsnr,karras`: each job gets its grid object."""
    assert GRIDS == sorted(GRID_OBJECTS) and len(GRIDS) >= 5
    (sweep,) = OverridesParser.create().parse_overrides([f"solver/grid={','.join(GRIDS)}"])
    assert sweep.is_sweep_override()
    for grid in sweep.sweep_string_iterator():
        cfg = compose_sample(f"solver={name}", f"solver/grid={grid}")
        solver = hydra.utils.instantiate(cfg.solver)
        assert type(solver.grid) is type(GRID_OBJECTS[grid])
        assert repr(solver.grid) == repr(GRID_OBJECTS[grid])
        assert solver.time_grid(VPSDE()).shape == (solver.steps + 1,)


@pytest.mark.parametrize("name", CONFIGS)
def test_fixed_step_configs_keep_their_default_grid(name):
    solver = load(name)
    default = {
        "ddim": QuadraticGrid,
        "dpm_solver": LogSNRGrid,
        "unipc": LogSNRGrid,
        "deis": LogSNRGrid,
        "ipndm": KarrasGrid,
        "lms": KarrasGrid,
        "dpm_solver_singlestep": LogSNRGrid,
        "sde_dpm_solver": LogSNRGrid,
        "dpm2": KarrasGrid,
        "dpm2_ancestral": KarrasGrid,
        "edm_stochastic": KarrasGrid,
        "sa_solver": LogSNRGrid,
        "heun": KarrasGrid,
        "analytic_dpm": OptimalTrajectory,
    }
    if isinstance(solver, FixedStepSolver):
        assert type(solver.grid) is default.get(name, UniformGrid)
